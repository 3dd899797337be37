"""Host commands, run without a shell, with a timeout, failing with what they printed."""

from __future__ import annotations

from .errors import HostError
from .spawn import run_child


async def run(*argv: str, timeout: float = 60) -> str:
    """Run a host command; return stdout or raise HostError with its stderr."""
    code, out, err = await run_child(*argv, timeout=timeout)
    if code != 0:
        message = (err or out).decode(errors="replace").strip()
        raise HostError(f"{' '.join(argv[:3])} failed ({code}): {message}")
    return out.decode(errors="replace")

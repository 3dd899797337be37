"""Host commands, run without a shell, with a timeout, failing with what they printed."""

from __future__ import annotations

import asyncio
import contextlib

from .errors import HostError


async def run(*argv: str, timeout: float = 60) -> str:
    """Run a host command; return stdout or raise HostError with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        message = (err or out).decode(errors="replace").strip()
        raise HostError(f"{' '.join(argv[:3])} failed ({proc.returncode}): {message}")
    return out.decode(errors="replace")

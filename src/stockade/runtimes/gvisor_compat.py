"""Work-arounds for the gVisor release Debian 12 ships (runsc 2022-12-19), preloaded into
gVisor-tier sandboxes only.

That Sentry answers EINVAL to ``statx(..., AT_NO_AUTOMOUNT, ...)``, so ``ls -l`` and ``stat``
fail inside it. A tiny shared object (``gvisor_statx.c``) that drops the flag is compiled once
per data directory with the host's C compiler and mounted read-only with an
``/etc/ld.so.preload`` naming it. Without a compiler the sandbox runs unchanged (and those
commands keep failing); nothing else depends on it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .. import host

log = logging.getLogger("stockade.runtimes")
SOURCE = Path(__file__).with_name("gvisor_statx.c")
#: Where the sandbox sees the shim (read-only).
INSIDE = "/.stockade/compat/statx.so"


def prepare(directory: Path) -> Path | None:
    """The directory holding ``statx.so`` and ``ld.so.preload``, compiled if need be; None
    if this host cannot compile it."""
    shim, preload = directory / "statx.so", directory / "ld.so.preload"
    if shim.exists() and preload.exists():
        return directory
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.warning("no C compiler: 'ls -l' and 'stat' will fail in gVisor sandboxes (install gcc)")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    with host.flocked(directory / ".lock"):
        if not shim.exists():
            tmp = directory / "statx.so.tmp"
            result = subprocess.run(
                [compiler, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode != 0:
                log.warning("could not compile the gVisor statx shim: %s", result.stderr[-500:])
                return None
            tmp.chmod(0o644)
            tmp.rename(shim)
        if not preload.exists():
            preload.write_text(INSIDE + "\n")
            preload.chmod(0o644)
    return directory


def mounts(directory: Path | None) -> list[dict[str, Any]]:
    """The OCI mounts that preload the shim (none without it)."""
    if directory is None:
        return []
    options = ["bind", "ro", "nosuid", "nodev"]
    return [
        {"destination": INSIDE, "type": "bind", "source": str(directory / "statx.so"), "options": options},
        {
            "destination": "/etc/ld.so.preload",
            "type": "bind",
            "source": str(directory / "ld.so.preload"),
            "options": [*options, "noexec"],
        },
    ]

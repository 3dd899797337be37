"""Running the host's network tools (``ip``, ``tc``, ``nft``) and reading what exists.

Everything that changes the host's network goes through :func:`run`, so it can be read (and
logged) in one place. Errors carry the command and its stderr.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
from pathlib import Path
from typing import Any

from ..host.spawn import run_child

NETNS_DIR = Path("/run/netns")


class NetError(Exception):
    """A host network command failed; the message names it and quotes its stderr."""


async def run(*argv: str, stdin: str | None = None, timeout: float = 30) -> str:
    """Run a command (with ``stdin`` text); return stdout or raise :class:`NetError`."""
    code, out, err = await run_child(
        *argv, stdin=stdin.encode() if stdin is not None else None, timeout=timeout
    )
    if code != 0:
        message = (err or out).decode(errors="replace").strip()
        detail = f"\n{stdin.strip()[:2000]}" if stdin else ""
        raise NetError(f"{' '.join(argv[:4])} failed ({code}): {message}{detail}")
    return out.decode(errors="replace")


class _Nft:
    """libnftables (what the ``nft`` command is built on), in process: no fork per change."""

    def __init__(self) -> None:
        lib = ctypes.CDLL("libnftables.so.1")
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib

    def run(self, script: str) -> None:
        ctx = self.lib.nft_ctx_new(0)
        try:
            self.lib.nft_ctx_buffer_output(ctx)
            self.lib.nft_ctx_buffer_error(ctx)
            if self.lib.nft_run_cmd_from_buffer(ctx, script.encode()) != 0:
                error = (self.lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
                raise NetError(f"nft failed: {error.strip()}\n{script.strip()[:2000]}")
        finally:
            self.lib.nft_ctx_free(ctx)


_nft: _Nft | None = None


async def nft(script: str) -> None:
    """Apply an nft script atomically (all of it or none of it)."""
    global _nft
    if _nft is None:
        _nft = _Nft()
    _nft.run(script)  # a netlink transaction: well under a millisecond, no need for a thread


def nft_json_sync(*args: str) -> dict[str, Any]:
    """``nft -j list ...`` parsed; ``{}`` if it names nothing (blocking, for checks)."""
    proc = subprocess.run(["nft", "-j", "list", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return {}
    result: dict[str, Any] = json.loads(proc.stdout or "{}")
    return result


def tables_sync() -> list[str]:
    """Names of every ``inet`` nft table on the host."""
    data = nft_json_sync("tables")
    return [
        item["table"]["name"]
        for item in data.get("nftables", [])
        if "table" in item and item["table"].get("family") == "inet"
    ]


def links_sync(prefix: str = "") -> list[str]:
    """Names of the host's network interfaces starting with ``prefix``."""
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))


def netns_sync(prefix: str = "") -> list[str]:
    """Named network namespaces (``/run/netns``) starting with ``prefix``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def sysctl_set(key: str, value: str) -> None:
    """Write a sysctl of the host's own network namespace."""
    Path("/proc/sys", *key.split(".")).write_text(value)

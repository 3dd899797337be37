"""Saving and loading a microVM's memory with QEMU's own migration, over file descriptors.

QEMU runs jailed and with ``-sandbox ...,spawn=deny``, so ``exec:`` URIs are out, and QEMU 7.2
has no ``file:`` URI. The host opens the memory file itself and hands QEMU the descriptor over
the QMP socket (``getfd`` with SCM_RIGHTS), then migrates to or from ``fd:<name>``. QEMU never
needs a path to the file, so the checkpoint can live outside the jail.

- save: ``stop`` (vCPUs halt, so the disk no longer changes), no bandwidth cap, ``migrate``,
  poll ``query-migrate`` until completed; QEMU flushes the disks before it reports completion.
- load: QEMU was started with ``-incoming defer``; ``migrate-incoming`` reads the file and the
  guest runs on from where it stopped. A damaged or truncated file makes the migration fail, and
  :class:`MigrationFailed` carries QEMU's reason.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .base import DriverError

#: Migration statuses that mean "still going".
_ACTIVE = {
    "none",
    "setup",
    "active",
    "device",
    "pre-switchover",
    "postcopy-active",
    "wait-unplug",
    "cancelling",
}


class MigrationFailed(DriverError):
    """QEMU could not save or load a guest's memory."""


class Qmp:
    """One QMP connection (commands run one at a time; file descriptors can ride along)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, path: Path, timeout: float = 10.0) -> "Qmp":
        """Connect to a VM's monitor socket (waiting for QEMU to create it) and negotiate."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, str(path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise DriverError(f"cannot reach the QEMU monitor at {path}: {exc}") from None
                await asyncio.sleep(0.02)
        qmp = cls(sock)
        try:
            await asyncio.wait_for(qmp._line(), timeout)  # the greeting
            await qmp.execute("qmp_capabilities")
        except BaseException:
            qmp.close()
            raise
        return qmp

    def close(self) -> None:
        self.sock.close()

    async def __aenter__(self) -> "Qmp":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _line(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buffer:
            chunk = await loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise DriverError("QEMU closed its monitor")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = json.loads(line)
        if not isinstance(message, dict):
            raise DriverError(f"QEMU's monitor sent {line[:200]!r}")
        return message

    async def execute(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        fd: int | None = None,
        timeout: float = 10.0,
    ) -> Any:
        """Run ``command`` (passing ``fd`` with it if given); return its result."""
        data = json.dumps({"execute": command, "arguments": arguments or {}}).encode() + b"\n"

        async def exchange() -> dict[str, Any]:
            if fd is not None:  # a few hundred bytes on a unix socket: sent whole, at once
                self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            else:
                await asyncio.get_running_loop().sock_sendall(self.sock, data)
            while True:
                message = await self._line()
                if "return" in message or "error" in message:
                    return message

        try:
            message = await asyncio.wait_for(exchange(), timeout)
        except asyncio.TimeoutError:
            raise DriverError(f"QEMU did not answer {command} within {timeout:.0f} s") from None
        except ValueError as exc:
            raise DriverError(f"QEMU's monitor sent bad JSON: {exc}") from None
        except OSError as exc:  # QEMU exited
            raise DriverError(f"QEMU closed its monitor during {command}: {exc}") from None
        if "error" in message:
            raise DriverError(f"QEMU refused {command}: {message['error'].get('desc')}")
        return message["return"]

    async def wait_migration(self, what: str, timeout: float) -> dict[str, Any]:
        """Poll ``query-migrate`` until the migration ends; raise MigrationFailed unless it
        completed."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            info = await self.execute("query-migrate")
            status = info.get("status", "none")
            if status == "completed":
                return info  # type: ignore[no-any-return]
            if status not in _ACTIVE:
                raise MigrationFailed(f"QEMU could not {what}: {info.get('error-desc') or status}")
            if time.monotonic() > deadline:
                raise MigrationFailed(f"QEMU did not {what} within {timeout:.0f} s (still {status})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


async def save_memory(monitor: Path, target: Path, timeout: float = 600.0) -> None:
    """Stop the guest and write its memory and device state to ``target`` (a new file)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        async with await Qmp.connect(monitor) as qmp:
            await qmp.execute("stop")
            # The default cap (32 MiB/s) would make a save of a few hundred MiB take seconds.
            await qmp.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
            await qmp.execute("getfd", {"fdname": "memory"}, fd=fd)
            await qmp.execute("migrate", {"uri": "fd:memory"})
            await qmp.wait_migration("save the guest's memory", timeout)
        os.fsync(fd)
    finally:
        os.close(fd)


async def load_memory(monitor: Path, source: Path, timeout: float = 600.0) -> None:
    """Feed ``source`` to a QEMU started with ``-incoming defer``; return once the guest runs."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise MigrationFailed(f"cannot open the saved memory {source}: {exc.strerror}") from None
    try:
        async with await Qmp.connect(monitor) as qmp:
            await qmp.execute("getfd", {"fdname": "memory"}, fd=fd)
            try:
                await qmp.execute("migrate-incoming", {"uri": "fd:memory"})
                await qmp.wait_migration("load the saved memory", timeout)
            except MigrationFailed:
                raise
            except DriverError as exc:  # QEMU 7.2 exits when a load fails
                raise MigrationFailed(f"QEMU could not load the saved memory: {exc}") from None
            status = (await qmp.execute("query-status")).get("status")
            if status != "running":
                await qmp.execute("cont")
    finally:
        os.close(fd)

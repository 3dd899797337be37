"""The host side of a memory checkpoint: quiet the agent, save the sandbox, bring it back.

gVisor refuses to save a sandbox holding sockets bound on the host, which is how the agent
listens (``--host-uds=create``). So the agent first lets go of them (``sys.suspend``, see
``agent/listener.py``) and waits for a ``resume`` file in its run directory, which the host
writes after a restore, or at once if the checkpoint failed and the sandbox keeps running.

A checkpoint directory holds runsc's image files and ``manifest.json`` (size and CRC-32 of
each), written last: a directory without a matching manifest is incomplete or corrupt, and
:func:`verify` says so before runsc is asked to load it.
"""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from pathlib import Path
from typing import Awaitable, Callable

from .base import DriverError, SandboxSpec
from .channel import AgentChannel

MANIFEST = "manifest.json"
SUSPEND_TIMEOUT = 15.0


class CheckpointCorrupt(DriverError):
    """A checkpoint is missing, incomplete or damaged and cannot be restored."""


def run_dir(spec: SandboxSpec) -> Path:
    return spec.directory / "disk" / "run"


async def quiesce(spec: SandboxSpec, connect: Callable[[SandboxSpec], Awaitable[AgentChannel]]) -> None:
    """Ask the agent to let go of its host sockets; return once it has."""
    marker = run_dir(spec) / "suspended"
    marker.unlink(missing_ok=True)
    channel = await connect(spec)
    try:
        await asyncio.wait_for(channel.call("sys.suspend"), SUSPEND_TIMEOUT)
    finally:
        await channel.aclose()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SUSPEND_TIMEOUT
    while not marker.exists():
        if loop.time() > deadline:
            wake(spec)
            raise DriverError(
                f"the agent of {spec.id} did not let go of its connections within {SUSPEND_TIMEOUT:.0f} s"
            )
        await asyncio.sleep(0.002)
    answer = marker.read_text().strip()
    if answer != "ok":
        wake(spec)
        raise DriverError(f"the agent of {spec.id} could not close its connections ({answer})")


def wake(spec: SandboxSpec) -> None:
    """Tell a suspended (or restored) agent to listen again (the agent may not remove its old
    socket file itself under gVisor)."""
    (run_dir(spec) / "agent.sock").unlink(missing_ok=True)
    resume = run_dir(spec) / "resume"
    tmp = resume.with_suffix(".tmp")
    tmp.write_text("")
    os.replace(tmp, resume)


def file_crc32(path: Path) -> int:
    """The CRC-32 of a file's contents, read in 1 MiB chunks."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def seal(image_dir: Path) -> None:
    """Write the manifest of a finished checkpoint (and flush everything to disk)."""
    files = {}
    for entry in sorted(image_dir.iterdir()):
        if entry.name != MANIFEST and entry.is_file():
            with open(entry, "rb") as f:
                os.fsync(f.fileno())
            files[entry.name] = {"size": entry.stat().st_size, "crc32": file_crc32(entry)}
    if not files:
        raise DriverError(f"the checkpoint in {image_dir} is empty")
    tmp = image_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "files": files}))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, image_dir / MANIFEST)


def verify(image_dir: Path) -> None:
    """Raise CheckpointCorrupt unless every file matches the manifest."""
    try:
        manifest = json.loads((image_dir / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointCorrupt(
            f"checkpoint {image_dir} has no readable manifest (interrupted pause?): {exc}"
        ) from None
    for name, expect in files.items():
        path = image_dir / name
        try:
            size = path.stat().st_size
        except OSError:
            raise CheckpointCorrupt(f"checkpoint file {path} is missing") from None
        if size != expect["size"]:
            raise CheckpointCorrupt(
                f"checkpoint file {path} is {size} bytes, expected {expect['size']} (truncated?)"
            )
        if file_crc32(path) != expect["crc32"]:
            raise CheckpointCorrupt(f"checkpoint file {path} does not match its checksum (damaged on disk?)")

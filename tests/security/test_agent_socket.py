"""The engine's connection to an agent never follows a link planted in the socket directory
(root inside a container-tier sandbox can replace agent.sock with a symlink to a host socket)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stockade.runtimes import ocidriver
from stockade.runtimes.base import DriverError, SandboxSpec
from stockade.runtimes.runc import RuncDriver
from stockade.security.bait import _Listener

pytestmark = [pytest.mark.root]


@pytest.fixture
def host_socket(tmp_path: Path):  # type: ignore[no-untyped-def]
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "host.sock"))
    listener = _Listener(sock)
    yield tmp_path / "host.sock", listener
    listener.close()


async def test_a_real_socket_is_reached(tmp_path: Path, host_socket) -> None:  # type: ignore[no-untyped-def]
    path, listener = host_socket
    channel = await ocidriver._connect_no_follow(path)
    await channel.aclose()
    assert listener.connections == 1 or await _eventually(lambda: listener.connections == 1)


async def test_a_planted_symlink_is_not_followed(
    tmp_path: Path,
    host_socket,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, listener = host_socket
    run_dir = tmp_path / "sandboxes" / "sbplanted" / "disk" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "agent.sock").symlink_to(path)
    monkeypatch.setattr(ocidriver, "AGENT_READY_TIMEOUT", 0.5)
    driver = RuncDriver(tmp_path, None, tmp_path)  # type: ignore[arg-type]
    spec = SandboxSpec(id="sbplanted", image="base", directory=run_dir.parent.parent)
    with pytest.raises(DriverError):
        await driver.connect(spec)
    with pytest.raises(OSError):
        await ocidriver._connect_no_follow(run_dir / "agent.sock")
    assert listener.connections == 0, "the engine followed the planted link to a host socket"


async def _eventually(check, wait: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    import asyncio

    for _ in range(int(wait / 0.05)):
        if check():
            return True
        await asyncio.sleep(0.05)
    return False

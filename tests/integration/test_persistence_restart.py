"""Workspaces and paused sandboxes survive a daemon restart (own daemon, own data directory)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from stockade import Sandbox, SandboxNotFound, StockadeError
from stockade.engine.hostcheck import find_leaks

from tests.conftest import Daemon, needs_root
from tests.integration.test_persistence import start_holder, wait_for


@pytest.fixture
def own_daemon() -> Iterator[Daemon]:
    needs_root()
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-restart-", dir="/var/tmp"))
    d = Daemon(data_dir).start()
    holder = [d]
    yield d
    try:
        holder[0].kill_sandboxes()
    finally:
        holder[0].stop()
    leaks = find_leaks(data_dir)
    subprocess.run(["rm", "-rf", str(data_dir)], check=False)
    assert not leaks, leaks


def test_workspaces_and_paused_sandboxes_survive_a_restart(own_daemon: Daemon) -> None:
    where = {"data_dir": own_daemon.data_dir}
    stopped = Sandbox.create(isolation="container", persistence="workspace", **where)
    stopped.files.write("/home/user/a.txt", "stopped-before")
    stopped.stop()
    running = Sandbox.create(isolation="container", persistence="workspace", **where)
    running.files.write("/home/user/b.txt", "running-before")
    paused = Sandbox.create(isolation="gvisor", **where)
    pid = start_holder(paused)
    paused.pause()
    ephemeral = Sandbox.create(isolation="container", **where)
    for sb in (stopped, running, paused, ephemeral):
        sb.close()

    own_daemon.stop()
    own_daemon.start()

    states = {s.id: s.state for s in Sandbox.list(**where)}
    assert states[stopped.id] == "stopped" and states[paused.id] == "paused"
    assert states[running.id] == "running" and states[ephemeral.id] == "running"
    again = Sandbox.connect(stopped.id, **where)
    assert again.files.read("/home/user/a.txt") == "stopped-before"
    back = Sandbox.connect(paused.id, **where)
    back.commands.send_stdin(pid, "after\n")
    wait_for(lambda: back.files.read("/home/user/held.txt").count("\n") == 2)
    assert back.files.read("/home/user/held.txt") == "v42:before\nv42:after\n"
    for sb in (again, back):
        sb.close()


def test_reboot_turns_running_workspaces_into_stopped(own_daemon: Daemon) -> None:
    """What a host reboot leaves: the record and disk, but no container and no mounts."""
    where = {"data_dir": own_daemon.data_dir}
    ws = Sandbox.create(isolation="container", persistence="workspace", **where)
    ws.files.write("/home/user/c.txt", "survives")
    eph = Sandbox.create(isolation="container", **where)
    frozen = Sandbox.create(isolation="container", persistence="workspace", **where)
    frozen.pause()
    for sb in (ws, eph, frozen):
        sb.close()
    own_daemon.stop()
    # Simulate the reboot: every container and mount of this data directory vanishes.
    root = own_daemon.data_dir / "runtime" / "container"
    for sandbox_id in (ws.id, eph.id, frozen.id):
        subprocess.run(
            ["runc", "--root", str(root), "delete", "--force", sandbox_id], check=False, capture_output=True
        )
        for mount in ("rootfs", "disk"):
            subprocess.run(
                ["umount", "-l", str(own_daemon.data_dir / "sandboxes" / sandbox_id / mount)],
                check=False,
                capture_output=True,
            )
    time.sleep(0.5)
    own_daemon.start()

    states = {s.id: s.state for s in Sandbox.list(**where)}
    assert states.get(ws.id) == "stopped" and states.get(frozen.id) == "stopped"
    assert eph.id not in states  # ephemeral: nothing kept
    with pytest.raises(SandboxNotFound):
        Sandbox.connect(eph.id, **where)
    again = Sandbox.connect(ws.id, **where)
    assert again.files.read("/home/user/c.txt") == "survives"
    again.close()


def test_a_daemon_killed_mid_kill_finishes_the_kill_at_restart(own_daemon: Daemon) -> None:
    """SIGKILL of the daemon while it kills a workspace (its files half removed): the restart
    must not bring the sandbox back (stopped, or "archived" with no archive once its disk
    image went); it finishes the kill, ends it as killed and leaves nothing behind."""
    where = {"data_dir": own_daemon.data_dir}
    ws = Sandbox.create(isolation="container", persistence="workspace", **where)
    ws.files.write("/home/user/d.txt", "doomed")
    record = own_daemon.data_dir / "sandboxes" / ws.id / "state.json"

    def kill() -> None:
        with contextlib.suppress(StockadeError, httpx.HTTPError):  # its daemon dies meanwhile
            ws.kill()

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    deadline = time.monotonic() + 30
    while '"state": "killing"' not in _read(record):  # recorded before the runtime is touched
        assert time.monotonic() < deadline and killer.is_alive(), "the kill was never recorded"
        time.sleep(0.0005)
    own_daemon.stop(signal.SIGKILL)
    killer.join(30)
    own_daemon.start()

    assert ws.id not in {s.id for s in Sandbox.list(**where)}
    with pytest.raises(SandboxNotFound):
        Sandbox.connect(ws.id, **where)
    assert Sandbox.get_end(ws.id, **where).reason == "killed"
    assert not (own_daemon.data_dir / "sandboxes" / ws.id).exists()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""

"""Teardown of container and gVisor sandboxes: a kill removes every process of the sandbox and
the engine reaps them itself (the runtimes leave them orphaned: an unreaped gVisor Sentry made
``runsc delete`` wait for the host's init, about 2 s per kill). Frozen, running and already dead
sandboxes alike; the make_sandbox fixture checks the host for leaks after each test."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stockade import SandboxUnavailable
from stockade.host import cgroup_parent, cgroup_pids

pytestmark = [pytest.mark.root]


def _zombie_children(pid: int) -> list[str]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                stat = Path(f"/proc/{child}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                found.append(stat.split(")")[0] + ")")
    return found


def _no_zombies(daemon: Any) -> list[str]:
    """The daemon's zombie children, given a moment (its own commands are reaped by asyncio
    as they end; an adopted sandbox process nobody reaps stays a zombie for good)."""
    deadline = time.monotonic() + 3
    while (zombies := _zombie_children(daemon.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return zombies


def test_kill_reaps_every_process_of_a_busy_sandbox(make_sandbox, tier: str, daemon) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier)
    handles = [sb.commands.run("sleep 600", background=True, timeout=None) for _ in range(3)]
    sb.commands.run("sh -c 'sleep 600 & sleep 600 & wait' >/dev/null 2>&1 &")
    relative = f"{cgroup_parent(daemon.data_dir)}/{sb.id}"
    assert len(cgroup_pids(relative)) >= 4
    for handle in handles:
        handle.disconnect()  # stop following them: the kill ends them
    sb.kill()
    assert cgroup_pids(relative) == set()
    assert _no_zombies(daemon) == []


def test_a_paused_container_is_killed_at_once(make_sandbox, daemon) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation="container")
    sb.commands.run("sleep 600", background=True, timeout=None).disconnect()
    sb.pause()  # the freezer: a frozen process only dies once thawed
    relative = f"{cgroup_parent(daemon.data_dir)}/{sb.id}"
    assert cgroup_pids(relative)
    sb.kill()
    assert cgroup_pids(relative) == set()
    assert _no_zombies(daemon) == []


def test_a_sandbox_that_died_on_its_own_is_reaped_and_killed(
    make_sandbox,
    tier: str,  # type: ignore[no-untyped-def]
    daemon,
) -> None:
    sb = make_sandbox(isolation=tier)
    assert sb.commands.run("echo up").stdout == "up\n"
    relative = f"{cgroup_parent(daemon.data_dir)}/{sb.id}"
    for pid in cgroup_pids(relative):  # as the OOM killer or a crash would
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while cgroup_pids(relative) and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(SandboxUnavailable):
        sb.commands.run("true")
    assert sb.get_info().id == sb.id  # still known: it is the caller's to kill
    sb.kill()
    assert _no_zombies(daemon) == []


@pytest.mark.slow
def test_a_microvm_kill_leaves_no_zombie(make_sandbox, daemon) -> None:  # type: ignore[no-untyped-def]
    # The engine adopts orphans for the container tiers; the microVM's jail is one too once
    # its unshare parent is killed.
    sb = make_sandbox(isolation="microvm")
    assert sb.commands.run("echo up").stdout == "up\n"
    sb.kill()
    assert _no_zombies(daemon) == []

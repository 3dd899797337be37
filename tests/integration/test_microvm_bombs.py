"""A bomb ends the process, not the microVM (docs/microvm.md, "Limits inside the guest").

The guest's agent starts every command in a cgroup of the guest's own, with the sandbox's pids
limit and the guest's memory less a reserve for the agent: a memory bomb is what the guest's
OOM killer kills, a fork bomb is refused at the pids limit, and the agent, the user's other
processes and the sandbox's files stay. One server and one microVM (QEMU on TCG here, slow) for
the module; every check goes through the real server and the SDK.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import pytest
from server_harness import Server, finish, needs_root, new_data_dir

from stockade import Sandbox

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]
BOOT = 900.0  # request timeout of the first create: it boots and saves a template VM (TCG)
PIDS = 128
MEMORY_BOMB = ["python3", "-c", "b = []\nwhile True: b.append(bytearray(8 << 20))"]
FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 3"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    needs_root()
    srv = Server(new_data_dir(), STOCKADE_USAGE_INTERVAL="0.5").start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def vm(server: Server) -> Iterator[Sandbox]:
    key = server.new_key("owner")
    with server.client(key, timeout=BOOT) as c:  # pids: an API field the SDK does not take
        r = c.post(
            "/sandboxes", json={"isolation": "microvm", "memory_mb": 256, "pids": PIDS, "timeout": 1800}
        )
        assert r.status_code == 201, r.text
    sb = Sandbox.connect(r.json()["id"], api_url=server.url, api_key=key)
    yield sb
    with contextlib.suppress(Exception):
        sb.kill()
    sb.close()


def _answer_time(vm: Sandbox, expected: str) -> float:
    started = time.monotonic()
    assert vm.files.read("/home/user/kept") == expected
    return time.monotonic() - started


def test_commands_run_in_the_guests_own_cgroup_and_cannot_leave_it(vm: Sandbox) -> None:
    assert vm.commands.run("cat /proc/self/cgroup").stdout == "0::/sandbox\n"
    guest = vm.commands.run(
        "cat /proc/1/cgroup /sys/fs/cgroup/sandbox/pids.max /sys/fs/cgroup/sandbox/memory.max", user="root"
    ).stdout.split()
    assert guest[:2] == ["0::/", str(PIDS)]  # the agent (PID 1) is outside it
    assert 128 << 20 <= int(guest[2]) <= (256 - 64) << 20  # the guest's RAM less a reserve
    escape = vm.commands.run("echo $$ > /sys/fs/cgroup/cgroup.procs; cat /proc/self/cgroup")
    assert "Permission denied" in escape.stderr and escape.stdout == "0::/sandbox\n"


def test_memory_bomb_is_killed_alone_and_the_reason_says_so(vm: Sandbox) -> None:
    vm.files.write("/home/user/kept", "before the bomb\n")
    other = vm.commands.run("sleep 600", background=True, timeout=None)
    bomb = vm.commands.run(MEMORY_BOMB, background=True, timeout=300)
    slowest, deadline = 0.0, time.monotonic() + 180
    while vm.get_info().reason != "out_of_memory":  # the agent answers throughout
        assert time.monotonic() < deadline, "the memory bomb was not reported"
        slowest = max(slowest, _answer_time(vm, "before the bomb\n"))
        time.sleep(0.2)
    result = bomb.wait()
    assert (result.status, result.oom_killed) == ("oom_killed", True)
    info = vm.get_info()
    assert (info.state, info.reason, info.message) == ("running", "out_of_memory", "out of memory (python3)")
    assert slowest < 1.0, f"the agent took {slowest:.2f} s to answer during the bomb"
    assert any(p.pid == other.pid for p in vm.commands.list())  # the user's other process
    assert vm.commands.run("cat /home/user/kept").stdout == "before the bomb\n"
    assert vm.commands.kill(other.pid) is True
    assert other.wait().exit_code == 137


def test_fork_bomb_is_stopped_at_the_pids_limit_and_the_agent_keeps_answering(vm: Sandbox) -> None:
    vm.files.write("/home/user/kept", "before the fork bomb\n")
    bomb = vm.commands.run(FORK_BOMB, background=True, timeout=15)
    slowest, started_at = 0.0, time.monotonic()
    while time.monotonic() - started_at < 12:  # while the bomb fills the limit
        slowest = max(slowest, _answer_time(vm, "before the fork bomb\n"))
        time.sleep(0.2)
    assert slowest < 1.0, f"the agent took {slowest:.2f} s to answer during the fork bomb"
    with contextlib.suppress(Exception):  # it ends by its timeout: the group is killed
        bomb.wait()
    deadline = time.monotonic() + 10
    while vm.get_info().reason != "pids_limit" and time.monotonic() < deadline:
        time.sleep(0.2)
    info = vm.get_info()
    assert (info.state, info.reason) == ("running", "pids_limit"), info
    assert f"process limit reached ({PIDS} processes" in (info.message or "")
    assert vm.commands.run("echo still-here").stdout == "still-here\n"
    deadline = time.monotonic() + 10  # the bomb's processes die with its group and are reaped
    while (left := int(vm.commands.run("cat /sys/fs/cgroup/sandbox/pids.current").stdout)) > 1:
        assert time.monotonic() < deadline, f"{left} processes left in the guest's cgroup"
        time.sleep(0.2)

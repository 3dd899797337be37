"""Resource limits, attacked: fork bomb, memory bomb, disk quota, output flood, uid 0, CPU.

What each limit does per tier is documented in docs/limits.md. In short: on the container tier
the limit stops the offending process and the sandbox goes on; on gVisor (ptrace platform) the
Sentry itself runs inside the sandbox's cgroup, so reaching the memory or pids limit stops the
whole sandbox, and the engine says which limit it was.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from stockade import (
    CommandTimeout,
    ConflictError,
    Sandbox,
    SandboxNotFound,
    SandboxUnavailable,
    ServerError,
    StorageFullError,
)
from stockade import host

FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 3"
MEMORY_BOMB = ["python3", "-c", "b = []\nwhile True: b.append(bytearray(8 << 20))"]
DEFAULT_PIDS = 512
MAX_OUTPUT = 64 << 20  # docs/limits.md: the default output limit per process
NOBODY = 65534


def _sample_stats(sb: Sandbox, stop: threading.Event, seen: list[dict[str, Any]]) -> None:
    while not stop.is_set():
        try:
            seen.append(sb.stats())
        except Exception:  # noqa: BLE001 - the sandbox may be gone (gVisor); sampling just ends
            return
        time.sleep(0.2)


def _while_sampling(sb: Sandbox, action: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``action`` while sampling the sandbox's stats; return its result (or exception)."""
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    sampler = threading.Thread(target=_sample_stats, args=(sb, stop, seen))
    sampler.start()
    try:
        try:
            outcome: Any = action()
        except Exception as exc:  # noqa: BLE001 - returned to the test, which asserts on it
            outcome = exc
    finally:
        stop.set()
        sampler.join()
    return outcome, seen


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _host_processes(daemon, sandbox_id: str) -> dict[int, dict[str, str]]:  # type: ignore[no-untyped-def]
    """The sandbox's processes as the host sees them: pid -> selected /proc status fields."""
    cgroup = f"{host.cgroup_parent(daemon.data_dir)}/{sandbox_id}"
    found = {}
    for pid in host.cgroup_pids(cgroup):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        found[pid] = {"uid": fields["Uid"], "cap_eff": fields["CapEff"], "cmd": cmd, "name": fields["Name"]}
    assert found, f"no host process in the cgroup of {sandbox_id}: is the cgroup path right?"
    return found


def test_fork_bomb_is_stopped_by_pids_max(make_sandbox, tier: str) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier)
    outcome, seen = _while_sampling(sb, lambda: sb.commands.run(FORK_BOMB, timeout=8))
    assert seen, "no stats sampled while the bomb ran"
    assert max(s["pids"] for s in seen) <= DEFAULT_PIDS, "the bomb went past pids.max"
    if tier == "container":
        # The bomb fills pids.max and fails to fork; the command timeout kills its whole
        # process group even though the shell that started it has exited by then. If the bomb
        # fills pids.max before the agent has started the threads that read the command's
        # output, the agent kills the command at once and says which limit it hit.
        if isinstance(outcome, ServerError):
            assert "process limit (pids)" in str(outcome), outcome
        else:
            assert isinstance(outcome, CommandTimeout), outcome
            assert "Resource temporarily unavailable" in outcome.result.stderr
            assert max(s["pids"] for s in seen) == DEFAULT_PIDS
        assert sb.commands.run("echo still-usable").stdout == "still-usable\n"
        assert sb.stats()["pids"] < 20
    else:
        # gVisor's Sentry and its ptrace stubs live in the same cgroup: when the bomb fills
        # pids.max the Sentry cannot make threads and the sandbox stops. The host is safe; the
        # engine names the limit.
        assert isinstance(outcome, SandboxUnavailable), outcome
        assert "process limit" in str(outcome)


def test_memory_bomb_is_killed_and_reported(make_sandbox, tier: str) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier, memory_mb=128)
    outcome, seen = _while_sampling(sb, lambda: sb.commands.run(MEMORY_BOMB, timeout=60))
    assert all(s["memory_bytes"] <= 128 << 20 for s in seen)
    if tier == "container":
        assert not isinstance(outcome, Exception), outcome
        assert (outcome.status, outcome.oom_killed, outcome.exit_code) == ("oom_killed", True, 137)
        assert sb.stats()["oom_kills"] >= 1
        assert sb.commands.run("echo still-usable").stdout == "still-usable\n"
    else:
        # The cgroup's OOM killer takes the Sentry, which holds all of the sandbox's memory;
        # the engine ends the sandbox at once with the reason (docs/persistence.md).
        assert isinstance(outcome, SandboxUnavailable), outcome
        assert "out of memory" in str(outcome) and "128 MiB" in str(outcome)
        with pytest.raises((SandboxUnavailable, SandboxNotFound)):
            sb.commands.run("true")
        deadline = time.monotonic() + 10
        while not _ended(sb) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sb.get_end().reason == "out_of_memory"


def _ended(sb: Sandbox) -> bool:
    try:
        sb.get_end()
        return True
    except ConflictError:
        return False


def test_disk_quota_stops_writes_and_frees_on_delete(make_sandbox, tier: str) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier, disk_mb=64)
    r = sb.commands.run("dd if=/dev/zero of=/home/user/fill bs=1M count=100")
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    written = int(sb.commands.run("wc -c < /home/user/fill").stdout)
    assert written <= 64 << 20
    with pytest.raises(StorageFullError):
        sb.files.write("/home/user/more.bin", b"x" * (4 << 20))
    assert not sb.files.exists("/home/user/more.bin"), "a failed upload left a partial file"
    sb.files.remove("/home/user/fill")
    info = sb.files.write("/home/user/more.bin", b"x" * (4 << 20))
    assert info.size == 4 << 20
    assert sb.commands.run("echo ok > /home/user/small && cat /home/user/small").stdout == "ok\n"


def test_output_flood_is_cut_at_the_limit(make_sandbox, tier: str, daemon) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier)
    rss_before = _rss(daemon.pid)
    r = sb.commands.run(
        "yes 'a line of output that fills the pipe quickly' | head -c 1000000000", timeout=240
    )
    grew = _rss(daemon.pid) - rss_before
    assert r.status == "output_limit"
    assert MAX_OUTPUT - (1 << 20) <= len(r.stdout_bytes) <= MAX_OUTPUT
    assert grew < 48 << 20, f"the server grew by {grew >> 20} MiB relaying a 1 GB flood"
    assert sb.commands.run("echo still-usable").stdout == "still-usable\n"
    small = sb.commands.run("head -c 5000 /dev/zero", max_output=1000)
    assert small.status == "output_limit" and len(small.stdout_bytes) <= 1000


def test_root_inside_is_not_root_on_the_host(make_sandbox, tier: str, daemon) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier)
    assert sb.commands.run("id -u", user="root").stdout == "0\n"
    sleeper = sb.commands.run("sleep 60", user="root", background=True, timeout=None)
    try:
        processes = _host_processes(daemon, sb.id)
    finally:
        sleeper.kill()
    if tier == "container":
        # Everything, the agent and root's commands included, runs as a shifted host uid.
        for pid, proc in processes.items():
            uids = {int(u) for u in proc["uid"].split()}
            assert min(uids) >= 1_000_000_000, f"host pid {pid} ({proc['cmd']}) runs as {uids}"
    else:
        # gVisor: sandboxed code runs in the Sentry and its ptrace stubs, as host "nobody".
        # The gofer (runsc's file proxy, outside the sandbox) is the only root process; it
        # serves files only, in a chroot, with a reduced capability set.
        rooted = {pid: p for pid, p in processes.items() if "0" in p["uid"].split()}
        assert all(p["cmd"].endswith("runsc-gofer") or p["name"] == "runsc-gofer" for p in rooted.values()), (
            f"root processes besides the gofer: {rooted}"
        )
        sandboxed = [p for p in processes.values() if p not in rooted.values()]
        assert sandboxed and all({int(u) for u in p["uid"].split()} == {NOBODY} for p in sandboxed), sandboxed
        assert any(p["name"] == "runsc-sandbox" or "runsc-sandbox" in p["cmd"] for p in sandboxed), (
            "the Sentry is not among the nobody processes"
        )


def test_cpu_limit_holds_a_busy_loop_to_half_a_core(make_sandbox, tier: str) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier, cpu=0.5)
    before, start = sb.stats()["cpu_seconds"], time.monotonic()
    sb.commands.run(
        ["python3", "-c", "import time\nend = time.time() + 6\nwhile time.time() < end: pass"], timeout=60
    )
    used = sb.stats()["cpu_seconds"] - before
    share = used / (time.monotonic() - start)
    # Unlimited, one busy thread takes about 1.0 core; the quota holds it near 0.5.
    assert 0.2 < share < 0.7, f"a cpu=0.5 sandbox used {share:.2f} of a core"

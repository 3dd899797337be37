"""Driver conformance: what users do, run the same way on every tier (container, gvisor, microvm).

One daemon for the module, whose sandbox uplink goes into a namespace this module creates
(test_network.py's playground: no packet can leave the machine), and one shared sandbox per tier
with what users combine: ``persistence="workspace"``, an egress policy, a read-write volume and
a small disk. Tests are grouped by tier (module-scoped parameter), so one microVM serves every
microVM case but the limits one. A tier that lacks a capability (``Capabilities`` of its driver,
docs/tiers.md) must answer 409 ``unsupported`` naming the tier and the capability; nothing here
is skipped or expected to fail.

Commands and files are also covered in depth, on all tiers, by test_commands.py and
test_files.py (100 MB transfers, zombies, reconnects); tier-specific attacks stay in their own
modules (test_limits.py, test_network.py, test_microvm*.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest

from stockade import ConflictError, Sandbox, SandboxUnavailable, Volume
from stockade.engine.engine import TIERS
from stockade.engine.hostcheck import find_leaks
from stockade import host
from tests.conftest import ALL_TIERS, Daemon
from tests.integration.test_network import (
    METADATA,
    NEIGHBOUR,
    PUBLIC,
    Playground,
    connect,
    own_address,
    resolve,
    start_daemon,
)
from tests.integration.test_pty import Screen

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(1200)]
BOOT = 600.0  # request timeout of a create or start: TCG boots on a loaded machine are slow
POLICY = {"allow_out": ["allowed.test"]}
DISK_MB = 256


class World(NamedTuple):
    playground: Playground
    daemon: Daemon
    volume: str
    volume_dir: Path


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    pg = Playground().start()
    d = None
    try:
        d = start_daemon(
            {
                "STOCKADE_NET_UPLINK_NETNS": f"/run/netns/{pg.name}",
                "STOCKADE_NET_DNS": pg.inside,
                "STOCKADE_POOL_SIZE": "0",
            }
        )
        name = Volume.create(f"conf-{secrets.token_hex(3)}", size_mb=64, data_dir=d.data_dir).name
        yield World(pg, d, name, d.data_dir / "volumes" / name / "mnt")
    finally:
        leaks: list[Any] = []
        if d is not None:
            d.kill_sandboxes()
            with d.client() as c:
                for v in c.get("/volumes").json()["items"]:
                    c.delete(f"/volumes/{v['name']}")
                for t in c.get("/templates").json()["items"]:
                    if t["name"].startswith("conf-"):
                        c.delete(f"/templates/{t['name']}")
            d.stop()
            leaks = find_leaks(d.data_dir)
            subprocess.run(["rm", "-rf", str(d.data_dir)], check=False)
        pg.stop()
    assert not leaks, f"the conformance daemon left things behind: {leaks}"


@pytest.fixture(scope="module", params=ALL_TIERS)
def tier(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _create(w: World, **kwargs: Any) -> Sandbox:
    return Sandbox.create(timeout=1800, request_timeout=BOOT, data_dir=w.daemon.data_dir, **kwargs)


@pytest.fixture(scope="module")
def box(world: World, tier: str) -> Iterator[Sandbox]:
    """The tier's shared sandbox: a workspace with an egress policy, a volume and a small disk."""
    sb = _create(
        world,
        isolation=tier,
        persistence="workspace",
        network=POLICY,
        volumes={"/data": world.volume},
        disk_mb=DISK_MB,
        envs={"FROM_CREATE": "yes"},
    )
    yield sb
    sb.kill()
    sb.close()
    assert not find_leaks(world.daemon.data_dir, sb.id)


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# -- commands --------------------------------------------------------------------------------
def test_commands(box: Sandbox, world: World) -> None:
    r = box.commands.run("echo out; echo err >&2; exit 7")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 7)
    r = box.commands.run("echo $FROM_CREATE $B; pwd; id -un", envs={"B": "b"}, cwd="/tmp")
    assert r.stdout == "yes b\n/tmp\nuser\n"
    assert box.commands.run("id -u", user="root").stdout == "0\n"
    seen: list[float] = []
    streamed = box.commands.run(
        "for i in 1 2 3; do echo $i; sleep 0.5; done", on_stdout=lambda _: seen.append(time.monotonic())
    )
    assert streamed.stdout == "1\n2\n3\n" and seen[-1] - seen[0] > 0.7, "not streamed"
    cat = box.commands.run("cat", background=True, stdin=True, timeout=None)
    cat.send_stdin("through stdin\n")
    cat.close_stdin()
    assert cat.wait().stdout == "through stdin\n"
    sleeper = box.commands.run("sleep 600", background=True, timeout=None)
    assert box.commands.kill(sleeper.pid) is True
    assert (sleeper.wait().status, sleeper.wait().exit_code) == ("killed", 137)
    trap = box.commands.run(
        "trap 'echo got-term; exit 5' TERM; touch /tmp/trapped; while true; do sleep 0.1; done",
        background=True,
        timeout=None,
    )
    _wait(lambda: box.files.exists("/tmp/trapped"), 30, "the trap to be set")
    with world.daemon.client() as client:  # (the SDK's kill() sends KILL only)
        sent = client.post(f"/sandboxes/{box.id}/processes/signal", json={"pid": trap.pid, "signal": "TERM"})
    assert sent.status_code < 300, sent.text
    result = trap.wait()
    assert (result.exit_code, result.stdout) == (5, "got-term\n")


# -- files -----------------------------------------------------------------------------------
def test_files(box: Sandbox) -> None:
    blob = bytes(range(256)) * 4 + os.urandom(8 << 20)  # binary, and large enough to stream
    box.files.write("/home/user/f/blob.bin", blob)
    assert box.files.read("/home/user/f/blob.bin", format="bytes") == blob
    remote = box.commands.run("sha256sum /home/user/f/blob.bin").stdout.split()[0]
    assert remote == hashlib.sha256(blob).hexdigest()
    box.commands.run(
        "cd /home/user/f && ln -sf blob.bin link && chmod 640 blob.bin && mkdir -p d/e && echo x > d/e/x.txt",
        check=True,
    )
    link = box.files.get_info("/home/user/f/link")
    assert (link.type, link.symlink_target) == ("symlink", "blob.bin")
    info = box.files.get_info("/home/user/f/blob.bin")
    assert (info.size, info.permissions, info.owner) == (len(blob), "-rw-r-----", "user")
    r = box.commands.run("ls -l /home/user/f/blob.bin && stat -c '%s %U %A' /home/user/f/blob.bin")
    assert r.exit_code == 0, r.stderr
    listing, stat_line = r.stdout.splitlines()
    assert listing.startswith("-rw-r-----") and " user " in listing
    assert stat_line == f"{len(blob)} user -rw-r-----"
    names = {e.path for e in box.files.list("/home/user/f", depth=3)}
    assert names == {
        "/home/user/f/blob.bin",
        "/home/user/f/link",
        "/home/user/f/d",
        "/home/user/f/d/e",
        "/home/user/f/d/e/x.txt",
    }
    box.files.remove("/home/user/f")
    assert not box.files.exists("/home/user/f")


# -- PTY -------------------------------------------------------------------------------------
def test_pty(box: Sandbox) -> None:
    screen = Screen()
    term = box.pty.create(80, 24, on_data=screen, cmd="bash --norc")
    term.send_input("echo h''i; tty\n")  # the quotes keep the echoed line from matching
    screen.wait_for(b"hi\r\n", 60)
    screen.wait_for(b"/dev/pts/", 60)
    term.resize(100, 40)
    term.send_input("stty size\n")
    screen.wait_for(b"40 100", 60)
    term.send_input("exit 3\n")
    assert (term.wait().exit_code, term.wait().status) == (3, "exited")


# -- network policy and volumes ------------------------------------------------------------------
def test_network_policy(box: Sandbox) -> None:
    assert connect(box, PUBLIC).startswith("FAIL")  # closed until resolved through the engine
    assert resolve(box, "allowed.test") == PUBLIC
    assert connect(box, PUBLIC) == f"OK hello {PUBLIC}"
    assert resolve(box, "neighbour.test") is None
    assert connect(box, NEIGHBOUR).startswith("FAIL")
    assert connect(box, METADATA).startswith("FAIL")


def test_volume(box: Sandbox, world: World, tier: str) -> None:
    box.files.write(f"/data/{tier}.txt", f"written by {tier}")
    box.commands.run("sync", check=True)
    assert (world.volume_dir / f"{tier}.txt").read_text() == f"written by {tier}"
    (world.volume_dir / f"host-{tier}.txt").write_text("from the host")
    assert box.files.read(f"/data/host-{tier}.txt") == "from the host"


def test_started_from_a_memory_snapshot_with_a_policy_and_a_volume(
    box: Sandbox, world: World, tier: str
) -> None:
    """Where the tier starts sandboxes from a booted memory snapshot, it does so with a network
    policy and a volume attached too, and the sandbox still has its own identity and settings
    (the network and volume tests above ran on it)."""
    caps = TIERS[tier].capabilities
    if not caps.memory_snapshot_start:
        pytest.skip(f"the {tier} tier declares no memory_snapshot_start: it boots every sandbox")
    assert caps.snapshot_start_with_network and caps.snapshot_start_with_volumes
    jail = json.loads((world.daemon.data_dir / "sandboxes" / box.id / "jail.json").read_text())
    assert "-incoming" in jail["argv"], "the sandbox booted instead of loading its template"
    assert "stockade.hostname=sbtpl" in " ".join(jail["argv"])  # the template VM's command line
    assert box.commands.run("hostname").stdout.strip() == box.id
    assert (
        own_address(box)
        == json.loads((world.daemon.data_dir / "net" / "sandboxes" / f"{box.id}.json").read_text())["address"]
    )


# -- pause, stop, archive, start -------------------------------------------------------------
KEEPER = """
import os, signal, time
secret = os.urandom(16).hex()  # only in this process's memory (and in /tmp/before)
open("/tmp/before", "w").write(secret)
signal.signal(signal.SIGUSR1, lambda *_: open("/tmp/after", "w").write(secret))
while True:
    time.sleep(3600)
"""


def test_pause_and_resume_keep_processes_and_memory(box: Sandbox, tier: str) -> None:
    box.files.write("/tmp/keeper.py", KEEPER)
    keeper = box.commands.run("exec python3 /tmp/keeper.py", background=True, timeout=None)
    _wait(lambda: box.files.exists("/tmp/before"), 60, "the keeper to start")
    keeper.disconnect()
    box.pause()  # with a volume and a network attached
    assert box.get_info().state == "paused"
    time.sleep(2)
    box.resume()  # (Sandbox.connect(id) does the same; this keeps the create's long timeout)
    assert box.get_info().state == "running"
    try:
        assert keeper.pid in {p.pid for p in box.commands.list()}
        box.commands.run(f"kill -USR1 {keeper.pid}", check=True)
        _wait(lambda: box.files.exists("/tmp/after"), 60, "the keeper's answer")
        assert box.files.read("/tmp/after") == box.files.read("/tmp/before")
        guest_now = float(box.commands.run("date +%s.%N").stdout)
        assert abs(guest_now - time.time()) < 2, "the sandbox's clock lags after resume"
        assert resolve(box, "allowed.test") == PUBLIC  # its network and volume are back
        assert connect(box, PUBLIC) == f"OK hello {PUBLIC}"
        assert box.files.read(f"/data/host-{tier}.txt") == "from the host"
    finally:
        box.commands.kill(keeper.pid)


def test_stop_archive_and_start_keep_the_workspace(box: Sandbox, tier: str) -> None:
    box.files.write("/home/user/kept.txt", "still here")
    box.commands.run("echo unsynced > /home/user/unsynced.txt", check=True)
    box.stop()
    assert box.get_info().state == "stopped"
    box.archive()
    assert box.get_info().state == "archived"
    box.start()
    assert box.get_info().state == "running"
    assert box.files.read("/home/user/kept.txt") == "still here"
    assert box.files.read("/home/user/unsynced.txt") == "unsynced\n"
    assert resolve(box, "allowed.test") == PUBLIC
    assert box.files.read(f"/data/host-{tier}.txt") == "from the host"


# -- snapshots -------------------------------------------------------------------------------
def test_snapshot_then_start_from_it_with_a_policy_and_a_volume(
    box: Sandbox, world: World, tier: str
) -> None:
    name = f"conf-{tier}-{secrets.token_hex(3)}"
    box.files.write("/home/user/snap.txt", "in the snapshot")
    if not TIERS[tier].capabilities.files_snapshot:
        with pytest.raises(ConflictError) as info:
            box.snapshot(name)
        assert info.value.code == "unsupported" and info.value.status == 409
        assert f"{tier} tier" in str(info.value) and "'files_snapshot'" in str(info.value)
        assert box.get_info().state == "running"
        return
    box.snapshot(name)
    child = _create(world, isolation=tier, template=name, network=POLICY, volumes={"/data": world.volume})
    try:
        assert child.files.read("/home/user/snap.txt") == "in the snapshot"
        assert resolve(child, "allowed.test") == PUBLIC
        assert connect(child, PUBLIC) == f"OK hello {PUBLIC}"
        assert child.files.read(f"/data/host-{tier}.txt") == "from the host"
    finally:
        child.kill()
    assert not find_leaks(world.daemon.data_dir, child.id)


# -- limits ----------------------------------------------------------------------------------
def test_disk_limit(box: Sandbox) -> None:
    r = box.commands.run(f"dd if=/dev/zero of=/home/user/fill bs=1M count={DISK_MB + 64}", timeout=600)
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    assert int(box.commands.run("wc -c < /home/user/fill").stdout) <= DISK_MB << 20
    box.files.remove("/home/user/fill")
    assert box.commands.run("echo ok > /home/user/small && cat /home/user/small").stdout == "ok\n"


#: memory.current may pass memory.max by what the kernel charges without asking (a page seen on
#: gVisor: 4 KiB over 512 MiB); a bomb that escaped its limit would be megabytes over.
CHARGE_SLACK = 256 << 10
MEMORY_BOMB = ["python3", "-c", "b = []\nwhile True: b.append(bytearray(8 << 20))"]
FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 3"


def _peak(world: World, sb: Sandbox, action: Any) -> tuple[Any, int, int]:
    """Run ``action``; return its outcome and the largest host memory and pids seen in the
    sandbox's cgroup meanwhile."""
    cgroup = f"{host.cgroup_parent(world.daemon.data_dir)}/{sb.id}"
    peak, stop = [0, 0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            stats = host.cgroup_stats(cgroup)
            peak[0] = max(peak[0], stats.memory_bytes)
            peak[1] = max(peak[1], stats.pids)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        try:
            outcome = action()
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            outcome = exc
    finally:
        stop.set()
        sampler.join()
    return outcome, peak[0], peak[1]


def test_memory_and_pid_limits(world: World, tier: str) -> None:
    """A memory bomb and a fork bomb never take more of the host than the sandbox's limits; the
    process (container, microvm) or the whole sandbox (gVisor's Sentry) is stopped, and said so."""
    sb = _create(world, isolation=tier)
    try:
        limit = sb.stats()["memory_limit_bytes"]
        outcome, memory, _ = _peak(world, sb, lambda: sb.commands.run(MEMORY_BOMB, timeout=120))
        assert memory <= limit + CHARGE_SLACK
        if isinstance(outcome, SandboxUnavailable):
            assert tier == "gvisor" and "out of memory" in str(outcome)
            return  # the sandbox ended with its Sentry
        assert not isinstance(outcome, Exception), outcome
        assert outcome.exit_code == 137, (outcome.exit_code, outcome.stderr[-300:])
        assert sb.commands.run("echo still-usable").stdout == "still-usable\n"
        outcome, _, pids = _peak(world, sb, lambda: sb.commands.run(FORK_BOMB, timeout=8))
        cgroup = f"{host.cgroup_parent(world.daemon.data_dir)}/{sb.id}"
        host_limit = int(
            next(d / "pids.max" for d in host.cgroup_dirs(cgroup) if (d / "pids.max").exists()).read_text()
        )
        assert pids <= host_limit
        if not isinstance(outcome, SandboxUnavailable):  # (gVisor's Sentry may end with it)
            assert sb.commands.run("echo after-bomb", timeout=120).stdout == "after-bomb\n"
    finally:
        sb.kill()
    assert not find_leaks(world.daemon.data_dir, sb.id)

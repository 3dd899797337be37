"""The microVM tier: a real QEMU guest per sandbox (TCG here, so each cold boot takes 10-30 s).

The module's first create boots the daemon's template VM once; every later create restores from
it in about a second (snapshot start), so the tests that need their own sandbox are cheap. One
microVM serves most tests; the panic, hang and crash tests make their own. Every test that boots
a guest is marked ``slow``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from stockade import CheckpointCorrupt, Sandbox, StockadeError
from stockade.config import default_images_dir
from stockade.engine.hostcheck import find_leaks
from stockade.images import ImageStore
from stockade import host
from stockade.runtimes.base import DriverError, SandboxSpec
from stockade.runtimes.qemu import QemuDriver
from stockade.runtimes.suspend import seal


pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
IMAGES_DIR = default_images_dir()
BOOT = 600.0  # request timeout for a create: TCG boots on a loaded 2-core machine are slow


def qemu_pids(data_dir: Path, sandbox_id: str) -> set[int]:
    return host.cgroup_pids(f"{host.cgroup_parent(data_dir)}/{sandbox_id}")


def restored_from_template(data_dir: Path, sandbox_id: str) -> bool:
    """Whether the sandbox's QEMU loaded a template's memory instead of booting (it then runs
    the template VM's command line, which names the template as the boot-time hostname)."""
    argv = json.loads((data_dir / "sandboxes" / sandbox_id / "jail.json").read_text())["argv"]
    return "-incoming" in argv and "stockade.hostname=sbtpl" in " ".join(argv)


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def vm(daemon: Any) -> Iterator[Sandbox]:
    sb = Sandbox.create(isolation="microvm", timeout=1800, request_timeout=BOOT)
    yield sb
    sb.kill()
    sb.close()
    assert not find_leaks(daemon.data_dir, sb.id)


def test_commands_exit_codes_and_output(vm: Sandbox) -> None:
    r = vm.commands.run("python3 -c 'print(6*7)'; echo err >&2; exit 7")
    assert (r.stdout, r.stderr, r.exit_code) == ("42\n", "err\n", 7)
    assert vm.commands.run("id -un; pwd").stdout == "user\n/home/user\n"
    assert vm.commands.run("hostname").stdout.strip() == vm.id


def test_files_round_trip(vm: Sandbox) -> None:
    vm.files.write("/home/user/a.txt", "hi from the host")
    assert vm.files.read("/home/user/a.txt") == "hi from the host"
    assert vm.commands.run("cat /home/user/a.txt").stdout == "hi from the host"
    data = os.urandom(3 << 20)
    vm.files.write("/tmp/big.bin", data)
    assert vm.files.read("/tmp/big.bin", format="bytes") == data
    assert "a.txt" in [e.name for e in vm.files.list("/home/user")]


def test_background_process_stdin_and_kill(vm: Sandbox) -> None:
    h = vm.commands.run("cat", background=True, stdin=True, timeout=None)
    h.send_stdin("hello\n")
    h.close_stdin()
    assert h.wait().stdout == "hello\n"
    sleeper = vm.commands.run("sleep 600", background=True, timeout=None)
    assert any(p.pid == sleeper.pid for p in vm.commands.list())
    assert vm.commands.kill(sleeper.pid) is True
    assert sleeper.wait().exit_code == 137


def test_guest_runs_its_own_kernel(vm: Sandbox) -> None:
    guest = vm.commands.run("uname -r").stdout.strip()
    assert guest and guest != os.uname().release
    assert guest.endswith("-amd64")  # Debian's kernel (images/guest.py)


def test_guest_cannot_see_host_files(vm: Sandbox, daemon: Any) -> None:
    marker = Path(tempfile.mkdtemp(prefix="stockade-host-secret-", dir="/var/tmp"))
    try:
        (marker / "secret").write_text("host only")
        r = vm.commands.run(f"cat {marker}/secret; ls {daemon.data_dir}; cat /proc/mounts", user="root")
        assert "host only" not in r.stdout
        assert "No such file" in r.stderr
        sources = {line.split()[0] for line in r.stdout.splitlines()}
        assert sources <= {"overlay", "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup2"}, sources
        blocks = vm.commands.run("ls /sys/block").stdout.split()
        assert blocks == ["vda", "vdb"], "the guest sees exactly its image and its own disk"
    finally:
        subprocess.run(["rm", "-rf", str(marker)], check=True)


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def test_qemu_is_jailed(vm: Sandbox, daemon: Any) -> None:
    pids = [p for p in qemu_pids(daemon.data_dir, vm.id) if "qemu" in Path(f"/proc/{p}/comm").read_text()]
    assert len(pids) == 1, f"expected one QEMU in the sandbox's cgroup, found {pids}"
    pid = pids[0]
    status = _status(pid)
    uids = set(status["Uid"].split())
    assert len(uids) == 1 and "0" not in uids, f"QEMU runs as {uids}"
    assert status["Seccomp"] == "2", "QEMU's seccomp filter is off"
    assert status["NoNewPrivs"] == "1"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    for ns in ("pid", "net", "mnt", "ipc", "uts"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    root = Path(f"/proc/{pid}/root")
    assert sorted(p.name for p in root.iterdir()) == [
        "bin",
        "dev",
        "etc",
        "guest",
        "lib",
        "lib64",
        "tmp",
        "usr",
        "vm",
    ]
    assert sorted(p.name for p in (root / "guest").iterdir()) == ["image.ext4", "initrd", "vmlinux"]
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["ld.so.cache"]
    for outside in (
        "etc/shadow",
        "root",
        "var",
        "proc",
        "sys",
        str(daemon.data_dir)[1:],
        str(IMAGES_DIR)[1:],
    ):
        assert not (root / outside).exists(), f"QEMU can see /{outside}"
    # It cannot write its own root, only its directory.
    assert "ro" in next(
        line.split()[5].split(",")
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        if line.split()[4] == "/"
    )


def test_memory_limit_bounds_qemu(vm: Sandbox) -> None:
    stats = vm.stats()
    assert 512 << 20 < stats["memory_limit_bytes"] <= (512 + 256) << 20
    assert 0 < stats["memory_bytes"] < stats["memory_limit_bytes"]


KEEPER = """
import os, signal, time
secret = os.urandom(16).hex()  # lives only in this process's memory (and in /tmp/before)
open("/tmp/before", "w").write(secret)
signal.signal(signal.SIGUSR1, lambda *_: open("/tmp/after", "w").write(secret))
while True:
    time.sleep(3600)
"""


def test_pause_and_resume_keep_processes_and_memory(vm: Sandbox, daemon: Any) -> None:
    vm.files.write("/tmp/keeper.py", KEEPER)
    keeper = vm.commands.run("exec python3 /tmp/keeper.py", background=True, timeout=None)
    sleeper = vm.commands.run("sleep 3600", background=True, timeout=None)
    wait_for(lambda: vm.files.exists("/tmp/before"), 30, "the keeper to start")
    keeper.disconnect()
    sleeper.disconnect()
    vm.pause()
    assert vm.get_info().state == "paused"
    memory = daemon.data_dir / "sandboxes" / vm.id / "checkpoint" / "memory"
    assert memory.stat().st_size > 1 << 20, "the guest's memory is not saved to a file"
    # Memory is on disk, not held by a stopped QEMU.
    wait_for(lambda: not qemu_pids(daemon.data_dir, vm.id), 30, "the paused QEMU to exit")
    time.sleep(3)  # the guest's clock stands still meanwhile; resume must set it
    again = Sandbox.connect(vm.id)
    try:
        assert again.get_info().state == "running"
        assert {keeper.pid, sleeper.pid} <= {p.pid for p in again.commands.list()}
        again.commands.run(f"kill -USR1 {keeper.pid}")
        wait_for(lambda: again.files.exists("/tmp/after"), 30, "the keeper's answer")
        assert again.files.read("/tmp/after") == again.files.read("/tmp/before")
        guest_now = float(again.commands.run("date +%s.%N").stdout)
        assert abs(guest_now - time.time()) < 2, "the guest's clock was not set after resume"
    finally:
        again.commands.kill(keeper.pid)
        again.commands.kill(sleeper.pid)
        again.close()


IDENTITY = (
    "hostname; cat /etc/machine-id; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; "
    "echo; python3 -c 'import random; print(random.getrandbits(64))'"
)


def test_snapshot_started_sandboxes_share_no_identity_or_randomness(
    vm: Sandbox, make_sandbox: Any, daemon: Any
) -> None:
    other = make_sandbox(isolation="microvm", timeout=600, request_timeout=BOOT)
    for sb in (vm, other):
        assert restored_from_template(daemon.data_dir, sb.id), f"{sb.id} booted cold"
    a = vm.commands.run(IDENTITY).stdout.split("\n")
    b = other.commands.run(IDENTITY).stdout.split("\n")
    assert (a[0], b[0]) == (vm.id, other.id)
    assert len(a[1]) == len(b[1]) == 32 and a[1] != b[1], "machine-ids are shared"
    assert len(a[2]) == len(b[2]) == 64 and a[2] != b[2], "the kernel RNG state is shared"
    assert a[3] != b[3], "new processes' random seeds are shared"
    assert other.commands.run("echo ok").stdout == "ok\n"


def test_workspace_keeps_unsynced_writes_across_stop_and_pause(make_sandbox: Any) -> None:
    """Files that commands wrote (never fsynced: they sit in the guest's page cache) survive a
    stop and start, and a pause then a stop (which drops the saved memory), with an intact
    filesystem: the engine has the guest flush before QEMU goes, and the disk has a journal."""
    sb = make_sandbox(isolation="microvm", persistence="workspace", timeout=600, request_timeout=BOOT)
    sb.commands.run(
        "mkdir -p /home/user/proj && cd /home/user/proj && for i in $(seq 300); do echo $i > f$i; done"
    )
    sb.stop()
    sb.start()
    assert sb.commands.run("cat /home/user/proj/f300; ls /home/user/proj | wc -l").stdout == "300\n300\n"
    sb.commands.run("echo second > /home/user/proj/g && rm /home/user/proj/f1")
    sb.pause()
    sb.stop()
    sb.start()
    r = sb.commands.run(
        "cat /home/user/proj/g; ls /home/user/proj | wc -l; dmesg | grep -c 'EXT4-fs error' || true",
        user="root",
    )
    assert r.stdout == "second\n300\n0\n", r.stdout


@pytest.mark.parametrize("damage", ["truncate", "truncate-and-reseal"])
def test_damaged_checkpoint_is_reported_and_sandbox_kept(make_sandbox: Any, daemon: Any, damage: str) -> None:
    """A truncated memory file is caught by its manifest; one whose manifest was rewritten to
    match gets to QEMU, which fails to load it: both are reported, and the sandbox stays."""
    sb = make_sandbox(isolation="microvm", timeout=600, request_timeout=BOOT)
    sb.files.write("/home/user/keep.txt", "safe")
    sb.pause()
    checkpoint = daemon.data_dir / "sandboxes" / sb.id / "checkpoint"
    memory = checkpoint / "memory"
    with open(memory, "r+b") as f:
        f.truncate(memory.stat().st_size // 2)
    if damage == "truncate-and-reseal":
        seal(checkpoint)
    with pytest.raises(CheckpointCorrupt, match="cannot be restored") as caught:
        Sandbox.connect(sb.id)
    message = caught.value.message
    assert "stopped" in message
    assert ("truncated" if damage == "truncate" else "QEMU could not load") in message, message
    assert {s.id: s.state for s in Sandbox.list()}[sb.id] == "stopped"
    assert not qemu_pids(daemon.data_dir, sb.id)
    # make_sandbox kills it and checks that nothing is left behind


def test_kernel_panic_is_reported_and_cleaned_up(daemon: Any) -> None:
    sb = Sandbox.create(isolation="microvm", timeout=600, request_timeout=BOOT)
    try:
        with pytest.raises(StockadeError):
            sb.commands.run("echo c > /proc/sysrq-trigger", user="root")
        deadline = time.monotonic() + 120
        while qemu_pids(daemon.data_dir, sb.id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not qemu_pids(daemon.data_dir, sb.id), "QEMU did not exit on a guest panic"
        with pytest.raises(StockadeError) as info:
            sb.commands.run("true")
        assert "microVM" in str(info.value) and "stopped" in str(info.value), info.value
        assert "Kernel panic" in str(info.value), "the guest's console is not in the report"
    finally:
        sb.kill()
        sb.close()
    assert not find_leaks(daemon.data_dir, sb.id)


async def test_hung_boot_is_reported_and_cleaned_up(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_MICROVM_BOOT_TIMEOUT", "1")
    monkeypatch.setenv("STOCKADE_MICROVM_SNAPSHOT", "0")  # a cold boot is what hangs
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-test-", dir="/var/tmp"))
    try:
        import stockade.agent

        driver = QemuDriver(data_dir, ImageStore(IMAGES_DIR), Path(stockade.agent.__file__).parent)
        spec = SandboxSpec(id="sbhung", image="base", directory=data_dir / "sandboxes" / "sbhung")
        await driver.create(spec)
        try:
            start = time.monotonic()
            with pytest.raises(DriverError, match="did not answer within 1 s"):
                await driver.start(spec)
            # Far below the 180 s TCG boot timeout it would wait without the setting (the
            # margin is for a loaded machine: the VM's launch itself has taken 31 s there).
            assert time.monotonic() - start < 90
        finally:
            await driver.destroy(spec)  # also when an assertion failed: never leave a VM
        assert not find_leaks(data_dir)
        assert not qemu_pids(data_dir, "sbhung")
    finally:
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)


def test_engine_killed_mid_boot_leaves_nothing(daemon: Any) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-test-", dir="/var/tmp"))
    first = type(daemon)(data_dir).start()
    outcome: dict[str, Any] = {}

    def create() -> None:
        try:
            with first.client() as c:
                outcome["response"] = c.post("/sandboxes", json={"isolation": "microvm"}, timeout=BOOT)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=create)
    thread.start()
    second = None
    try:
        records = data_dir / "runtime" / "microvm"
        deadline = time.monotonic() + 120
        ids: set[str] = set()
        while time.monotonic() < deadline:
            ids = {p.stem for p in records.glob("*.json")}
            if any(qemu_pids(data_dir, i) for i in ids):
                break
            time.sleep(0.05)
        assert any(qemu_pids(data_dir, i) for i in ids), "QEMU never started"
        first.stop(signal.SIGKILL)
        thread.join(30)
        assert "response" not in outcome, "the boot finished before the engine was killed"
        second = type(daemon)(data_dir).start()  # recovery collects what the dead engine left
        for i in ids:
            assert not qemu_pids(data_dir, i)
            assert not find_leaks(data_dir, i)
        templates = data_dir / "runtime" / "microvm-templates"
        assert not list(templates.glob(".b-*")), "a half-built template VM was left behind"
    finally:
        first.stop(signal.SIGKILL)
        if second is not None:
            second.kill_sandboxes()
            second.stop()
        leaks = find_leaks(data_dir)
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)
    assert not leaks, leaks

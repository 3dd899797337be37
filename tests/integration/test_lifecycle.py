"""Lifecycle: expiry, timeouts, daemon crashes (mid-command and mid-create), bad requests."""

from __future__ import annotations

import random
import secrets
import shutil
import signal
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from stockade import InvalidRequestError, Sandbox, SandboxNotFound
from stockade.config import default_images_dir
from stockade.engine.hostcheck import find_leaks
from stockade.images import ImageStore, import_rootfs_tar
from stockade.host import cgroup_parent

# conftest's Daemon, reached through the fixture (conftest is not importable by name here).
Daemon = Any
IMAGES_DIR = default_images_dir()  # as conftest computes it: before the daemon fixture runs


def _wait_gone(sb: Sandbox, within: float) -> float:
    """Seconds until the sandbox reports SandboxNotFound; fails after ``within``."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            sb.get_info()
        except SandboxNotFound:
            return time.monotonic() - start
        time.sleep(0.2)
    pytest.fail(f"sandbox {sb.id} still exists {within:.0f} s after it should have expired")


def test_expired_sandbox_is_gone_without_a_trace(make_sandbox, tier: str, daemon) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier, timeout=2)
    assert sb.commands.run("echo alive").stdout == "alive\n"
    _wait_gone(sb, within=30)
    with pytest.raises(SandboxNotFound):
        sb.commands.run("true")
    assert find_leaks(daemon.data_dir, sb.id) == []


def test_set_timeout_extends_the_lifetime(make_sandbox, tier: str) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier, timeout=3)
    first = sb.get_info().expires_at
    sb.set_timeout(60)
    assert sb.get_info().expires_at > first + 50
    time.sleep(5)
    assert sb.commands.run("echo still-here").stdout == "still-here\n"
    sb.set_timeout(1)
    _wait_gone(sb, within=30)


# -- crashes of the daemon ---------------------------------------------------------------------
@pytest.fixture
def private_daemon(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A daemon of our own on its own data directory, so that killing it harms no other test.
    Without a warm pool, so that every sandbox on the data dir is one the test made."""
    monkeypatch.setenv("STOCKADE_POOL_SIZE", "0")
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-crash-", dir="/var/tmp"))
    make = type(daemon)
    daemon = make(data_dir).start()
    yield daemon
    daemon = make(data_dir)
    try:
        daemon.start().kill_sandboxes()  # the last daemon of the test may have been killed
    finally:
        daemon.stop()
    leaks = find_leaks(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    assert leaks == [], f"after the crashes and a clean stop: {leaks}"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _crash(daemon: Daemon) -> None:
    """SIGKILL the daemon, then wait for the runtime commands it had started (runc run, mkfs,
    ...) to finish on their own, as they would before a supervisor restarts it. (The sandboxes'
    own processes, which the daemon adopts from the runtimes, live on.)"""
    sandboxes = f"/{cgroup_parent(daemon.data_dir)}/"
    children = [c for c in _children(daemon.pid) if sandboxes not in _cgroup(c)]
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait()
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{c}").exists() and _state(c) != "Z" for c in children):
        assert time.monotonic() < deadline, "the killed daemon's children did not finish"
        time.sleep(0.05)


def _cgroup(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def _sandboxes(daemon: Daemon) -> list[dict[str, Any]]:
    with daemon.client() as client:
        items: list[dict[str, Any]] = client.get("/sandboxes").json()["items"]
        return items


def test_daemon_killed_mid_command_leaves_nothing_unmanaged(private_daemon: Daemon) -> None:
    data_dir = private_daemon.data_dir
    boxes = [
        Sandbox.create(isolation=tier, timeout=120, data_dir=data_dir) for tier in ("container", "gvisor")
    ]
    handles = [sb.commands.run("echo started; sleep 600", background=True, timeout=None) for sb in boxes]
    time.sleep(0.5)
    _crash(private_daemon)
    for sb, handle in zip(boxes, handles):
        handle.disconnect()  # its stream died with the daemon
        sb.close()
    again = type(private_daemon)(data_dir).start()
    try:
        listed = {s["id"] for s in _sandboxes(again)}
        assert listed == {sb.id for sb in boxes}, "the restarted daemon lost running sandboxes"
        for sb, handle in zip(boxes, handles):
            attached = Sandbox.connect(sb.id, data_dir=data_dir)
            assert attached.commands.run("echo re-attached").stdout == "re-attached\n"
            assert any(p.pid == handle.pid for p in attached.commands.list()), (
                "the command started before the crash is gone"
            )
            attached.kill()
            assert find_leaks(data_dir, sb.id) == []
    finally:
        again.stop()


def test_daemon_killed_mid_create_leaves_no_half_sandbox(private_daemon: Daemon) -> None:
    data_dir = private_daemon.data_dir
    rng = random.Random(2)
    daemon = private_daemon
    for attempt in range(4):
        tier = ("container", "gvisor")[attempt % 2]
        outcome: list[Any] = []

        def create() -> None:
            try:
                with daemon.client() as client:
                    outcome.append(
                        client.post("/sandboxes", json={"isolation": tier, "timeout": 120, "cpu": 0.5})
                    )
            except httpx.HTTPError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=create)
        worker.start()
        time.sleep(rng.uniform(0.05, 0.3))
        _crash(daemon)
        worker.join(30)
        assert not worker.is_alive()
        daemon = type(daemon)(data_dir).start()
        # Whatever the crash interrupted is either a whole, working sandbox or nothing at all.
        for item in _sandboxes(daemon):
            sb = Sandbox.connect(item["id"], data_dir=data_dir)
            assert sb.commands.run("echo whole").stdout == "whole\n"
            sb.kill()
        leaks = find_leaks(data_dir)
        assert leaks == [], f"attempt {attempt} ({tier}) left: {leaks}"
    daemon.stop()


# -- refused requests --------------------------------------------------------------------------
def _busybox_rootfs_tar(directory: Path) -> Path:
    """A root filesystem with busybox and no python3."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.fail("busybox-static is missing: scripts/install installs it")
    tar_path = directory / "busybox.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name in ("bin", "etc", "tmp", "home"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return tar_path


def test_image_without_python_is_refused_at_create(daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = f"test-nopython-{secrets.token_hex(4)}"
    store = ImageStore(IMAGES_DIR)
    import_rootfs_tar(store, name, _busybox_rootfs_tar(tmp_path))
    try:
        with pytest.raises(InvalidRequestError) as info:
            Sandbox.create(name, isolation="container")
        assert "python3" in info.value.message and name in info.value.message
    finally:
        store.remove(name)
    assert not (daemon.data_dir / "sandboxes").exists() or not [
        d
        for d in (daemon.data_dir / "sandboxes").iterdir()
        if name in (d / "state.json").read_text(errors="replace")
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"isolation": "vm-of-doom"}, "isolation"),
        ({"timeout": -5}, "timeout"),
        ({"timeout": 10**9}, "timeout"),
        ({"memory_mb": 1 << 40}, "memory_mb"),
        ({"memory_mb": 1}, "memory_mb"),
        ({"cpu": 0}, "cpu"),
        ({"cpu": 1000}, "cpu"),
        ({"disk_mb": 1}, "disk_mb"),
        ({"template": "no-such-template"}, "template"),
    ],
)
def test_bad_create_arguments_name_the_field(daemon, kwargs: dict[str, Any], field: str) -> None:  # type: ignore[no-untyped-def]
    before = {s["id"] for s in _sandboxes(daemon)}
    with pytest.raises(InvalidRequestError) as info:
        Sandbox.create(**kwargs)
    assert field in info.value.message, info.value.message
    assert {s["id"] for s in _sandboxes(daemon)} == before


def test_unknown_sandbox_id_is_not_found(daemon) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SandboxNotFound):
        Sandbox.connect("sb000000000000000000")
    with daemon.client() as client:
        for method, url in (("GET", ""), ("DELETE", ""), ("POST", "/timeout"), ("GET", "/stats")):
            response = client.request(
                method, f"/sandboxes/sbnope{url}", json={"timeout": 5} if method == "POST" else None
            )
            assert response.status_code == 404, (method, url, response.text)
            assert response.json()["code"] == "sandbox_not_found"


def test_kill_is_idempotent(make_sandbox, tier: str, daemon) -> None:  # type: ignore[no-untyped-def]
    sb = make_sandbox(isolation=tier)
    other = Sandbox.connect(sb.id)
    errors: list[BaseException] = []

    def kill(box: Sandbox) -> None:
        try:
            box.kill()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=kill, args=(box,)) for box in (sb, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    sb.kill()
    with pytest.raises(SandboxNotFound):
        Sandbox.connect(sb.id)
    assert find_leaks(daemon.data_dir, sb.id) == []


def test_resize_through_the_sdk(daemon) -> None:  # type: ignore[no-untyped-def]
    """``Sandbox.resize``: more memory at once on a running container sandbox, never less (409),
    an out-of-range value 400 naming the field; the sandbox keeps working."""
    from stockade.sdk.exceptions import ConflictError

    sb = Sandbox.create(memory_mb=256)
    try:
        sb.resize(cpu=1.5, memory_mb=384)
        assert (sb.info.cpu, sb.info.memory_mb) == (1.5, 384)
        assert [s.memory_mb for s in Sandbox.list() if s.id == sb.id] == [384]
        with pytest.raises(ConflictError, match="only grow"):
            sb.resize(memory_mb=128)
        with pytest.raises(InvalidRequestError, match="memory_mb"):
            sb.resize(memory_mb=1)
        assert sb.commands.run("echo fine").stdout == "fine\n"
    finally:
        sb.kill()

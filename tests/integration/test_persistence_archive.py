"""Archived workspaces: stopped -> archived (layer compressed, disk freed) -> start/connect
restores it; damaged archives are reported and kept; an engine SIGKILLed mid-archive or
mid-restore loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from stockade import ArchiveCorrupt, ConflictError, Sandbox
from stockade.engine import archive
from stockade.engine.hostcheck import find_leaks

from tests.conftest import Daemon, needs_root
from tests.integration.test_cli import cli
from tests.integration.test_persistence import wait_for

#: Writes incompressible and compressible files, then prints their checksum.
FILL = (
    "set -e; mkdir -p /home/user/w; cd /home/user/w; head -c {mb}M /dev/urandom > random.bin;"
    " seq 1 200000 > numbers.txt; ln -s numbers.txt link; mkdir -p deep/er;"
    " echo kept > deep/er/file; chmod 600 deep/er/file; sha256sum random.bin numbers.txt"
)


def fill(sb: Sandbox, mb: int = 4) -> str:
    result = sb.commands.run(FILL.format(mb=mb), timeout=120)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def check(sb: Sandbox, sums: str) -> None:
    result = sb.commands.run(
        "cd /home/user/w && sha256sum random.bin numbers.txt && "
        "readlink link && stat -c %a deep/er/file && cat deep/er/file"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == sums + "numbers.txt\n600\nkept\n"


def test_archive_frees_the_layer_and_start_restores_it(
    daemon: Daemon, make_sandbox: Callable[..., Sandbox]
) -> None:
    sb = make_sandbox(isolation="container", persistence="workspace")
    sums = fill(sb)
    with pytest.raises(ConflictError, match="cannot archive .* it is running"):
        sb.archive()
    sb.stop()
    directory = daemon.data_dir / "sandboxes" / sb.id
    stored = (directory / "disk.img").stat().st_blocks * 512
    r = cli("sandbox", "archive", sb.id)  # through the CLI: never starts the sandbox first
    assert r.returncode == 0 and "archived" in r.stdout, r.stderr
    assert sb.get_info().state == "archived"
    assert {s.id: s.state for s in Sandbox.list()}[sb.id] == "archived"
    assert not (directory / "disk.img").exists()
    assert 0 < archive.held_bytes(directory) < stored
    with pytest.raises(ConflictError, match="is archived"):
        sb.commands.run("true")
    for verb in (sb.pause, sb.stop, sb.archive):
        with pytest.raises(ConflictError, match="it is archived; start it"):
            verb()
    with pytest.raises(ConflictError, match="is archived; start it"):
        sb.snapshot("from-an-archive")
    again = Sandbox.connect(sb.id)  # restores, then boots: same id, same files
    assert again.info.state == "running"
    check(again, sums)
    assert not (directory / archive.ARCHIVE).exists()
    assert again.commands.run("echo more > /home/user/w/new").exit_code == 0
    again.close()


def test_a_damaged_archive_is_reported_and_the_sandbox_kept(
    daemon: Daemon, make_sandbox: Callable[..., Sandbox]
) -> None:
    sb = make_sandbox(isolation="gvisor", persistence="workspace")
    fill(sb, mb=1)
    sb.stop()
    sb.archive()
    path = archive.archive_path(daemon.data_dir / "sandboxes" / sb.id)
    size = path.stat().st_size
    os.truncate(path, size // 2)
    with pytest.raises(ArchiveCorrupt, match=r"truncated\?.*stays archived"):
        sb.start()
    assert sb.get_info().state == "archived" and path.exists()
    with pytest.raises(ArchiveCorrupt, match="stays archived"):
        Sandbox.connect(sb.id)
    assert sb.get_info().state == "archived"  # kill (at teardown) removes it, archive and all


def test_auto_archive_archives_a_stopped_workspace(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox(isolation="container", persistence="workspace", auto_archive=1)
    assert sb.info.auto_archive == 1
    sb.files.write("/home/user/note.txt", "archived by its timer")
    sb.stop()
    wait_for(lambda: sb.get_info().state == "archived")
    again = Sandbox.connect(sb.id)
    assert again.files.read("/home/user/note.txt") == "archived by its timer"
    again.close()


# -- the engine killed mid-way -----------------------------------------------------------------


@pytest.fixture
def own_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    needs_root()
    monkeypatch.setenv("STOCKADE_POOL_SIZE", "0")  # no warm sandboxes to recover after a crash
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-archive-", dir="/var/tmp"))
    d = Daemon(data_dir).start()
    yield d
    try:
        d.kill_sandboxes()
    finally:
        d.stop()
    leaks = find_leaks(data_dir)
    subprocess.run(["rm", "-rf", str(data_dir)], check=False)
    assert not leaks, leaks


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def crash(daemon: Daemon, when: Callable[[], bool]) -> None:
    """SIGKILL the daemon and the tar/lz4 it runs (as a power cut would) once ``when()``."""
    wait_for(when, timeout=60)
    victims = [daemon.pid, *_children(daemon.pid)]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert daemon.proc is not None
    daemon.proc.wait()


def in_background(fn: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - the daemon dies under it: expected
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigkill_mid_archive_and_mid_restore_loses_nothing(own_daemon: Daemon) -> None:
    where = {"data_dir": own_daemon.data_dir}
    sb = Sandbox.create(isolation="container", persistence="workspace", disk_mb=1024, timeout=600, **where)
    sums = fill(sb, mb=150)  # big enough that tar is caught at work
    sb.stop()
    sb.close()
    directory = own_daemon.data_dir / "sandboxes" / sb.id

    def archive_it() -> None:
        Sandbox.get(sb.id, **where).archive()  # the daemon dies: nothing to close

    thread = in_background(archive_it)
    crash(own_daemon, lambda: (directory / (archive.ARCHIVE + ".tmp")).exists())
    thread.join(30)
    own_daemon.start()
    assert {s.id: s.state for s in Sandbox.list(**where)}[sb.id] == "stopped"
    assert not [p.name for p in directory.iterdir() if "archive" in p.name or "layer" in p.name]

    handle = Sandbox.get(sb.id, **where)
    handle.archive()
    handle.close()
    assert not (directory / "disk.img").exists()

    def restore_it() -> None:
        Sandbox.connect(sb.id, **where)

    thread = in_background(restore_it)
    crash(own_daemon, lambda: (directory / archive.RESTORE_DIR / "disk.img").exists())
    thread.join(30)
    own_daemon.start()
    assert {s.id: s.state for s in Sandbox.list(**where)}[sb.id] == "archived"
    assert not (directory / archive.RESTORE_DIR).exists()
    again = Sandbox.connect(sb.id, **where)
    check(again, sums)
    again.close()  # the fixture kills it and checks for leaks

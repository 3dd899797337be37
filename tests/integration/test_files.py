"""Files: read, write, list, stat, mkdir, remove, rename, exists; large files streamed."""

from __future__ import annotations

import hashlib
import os

import pytest

from stockade import InvalidRequestError, NotFoundError, PermissionDeniedError, Sandbox

from conftest import ALL_TIERS


@pytest.fixture(params=ALL_TIERS)
def tier(request: pytest.FixtureRequest) -> str:
    """This behaviour is the same on every tier, the microVM included."""
    return str(request.param)


def test_write_then_read_text_and_bytes(sandbox: Sandbox) -> None:
    sandbox.files.write("/home/user/data.csv", b"a,b\n1,2\n")
    assert sandbox.files.read("/home/user/data.csv") == "a,b\n1,2\n"
    assert sandbox.files.read("/home/user/data.csv", format="bytes") == b"a,b\n1,2\n"
    assert sandbox.commands.run("cat /home/user/data.csv").stdout == "a,b\n1,2\n"


def test_written_file_belongs_to_the_user(sandbox: Sandbox) -> None:
    info = sandbox.files.write("/home/user/mine.txt", "x")
    assert (info.owner, info.type, info.size) == ("user", "file", 1)


def test_user_cannot_write_where_user_cannot(sandbox: Sandbox) -> None:
    with pytest.raises(PermissionDeniedError):
        sandbox.files.write("/etc/evil", "x")
    assert sandbox.files.write("/etc/ok", "x", user="root").owner == "root"


def test_list_stat_mkdir_rename_remove_exists(sandbox: Sandbox) -> None:
    assert sandbox.files.make_dir("/home/user/d/e") is True
    assert sandbox.files.make_dir("/home/user/d/e") is False
    sandbox.files.write("/home/user/d/e/f.txt", "hello")
    names = {e.path for e in sandbox.files.list("/home/user/d", depth=2)}
    assert names == {"/home/user/d/e", "/home/user/d/e/f.txt"}
    sandbox.files.rename("/home/user/d/e/f.txt", "/home/user/d/g.txt")
    assert sandbox.files.exists("/home/user/d/g.txt")
    assert not sandbox.files.exists("/home/user/d/e/f.txt")
    info = sandbox.files.get_info("/home/user/d/g.txt")
    assert info.size == 5 and info.permissions == "-rw-r--r--"
    sandbox.files.remove("/home/user/d")
    assert not sandbox.files.exists("/home/user/d")


def test_coreutils_see_files_as_the_api_does(sandbox: Sandbox) -> None:
    """``ls -l`` and ``stat`` work on every tier (gVisor 2022-12 needs a statx shim for them)."""
    sandbox.files.write("/home/user/seen.txt", b"12345")
    r = sandbox.commands.run("ls -l /home/user/seen.txt && stat -c '%s %U %A' /home/user/seen.txt")
    assert r.exit_code == 0, r.stderr
    listing, stat_line = r.stdout.splitlines()
    assert listing.startswith("-rw") and " user " in listing and listing.endswith("/home/user/seen.txt")
    entry = sandbox.files.get_info("/home/user/seen.txt")
    assert stat_line == f"5 user {entry.permissions}"


def test_symlink_entries_report_their_target(sandbox: Sandbox) -> None:
    sandbox.commands.run("ln -s /etc/hostname /home/user/link")
    info = sandbox.files.get_info("/home/user/link")
    assert info.type == "symlink" and info.symlink_target == "/etc/hostname"


def test_missing_file_and_directory_errors(sandbox: Sandbox) -> None:
    with pytest.raises(NotFoundError):
        sandbox.files.read("/home/user/nope")
    with pytest.raises(InvalidRequestError):
        sandbox.files.read("/home/user")


def test_100_mb_round_trip_with_bounded_host_memory(sandbox: Sandbox, daemon) -> None:  # type: ignore[no-untyped-def]
    block = os.urandom(1 << 20)
    digest = hashlib.sha256(block * 100).hexdigest()
    rss_before = _rss(daemon.pid)
    sandbox.files.write("/home/user/big.bin", (block for _ in range(100)))
    remote = sandbox.commands.run("sha256sum /home/user/big.bin").stdout.split()[0]
    assert remote == digest
    h = hashlib.sha256()
    size = 0
    for chunk in sandbox.files.read("/home/user/big.bin", format="stream"):
        h.update(chunk)
        size += len(chunk)
    assert size == 100 << 20 and h.hexdigest() == digest
    grew = _rss(daemon.pid) - rss_before
    assert grew < 48 << 20, f"the server grew by {grew >> 20} MiB moving 100 MB"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0

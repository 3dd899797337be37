"""Persistence rules that need no sandbox: options, mount paths, checkpoint manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.engine.errors import InvalidRequest
from stockade.engine.lifecycle import TRANSITIONS, check_auto_archive, check_options
from stockade.engine.volumes import check_mount_path
from stockade.runtimes.suspend import CheckpointCorrupt, seal, verify


def test_options() -> None:
    assert check_options("workspace", "stop", None) > 86400
    assert check_options("ephemeral", "pause", 60) == 60
    for bad in (
        ("forever", "kill", None),
        ("ephemeral", "explode", None),
        ("ephemeral", "stop", None),
        ("workspace", "kill", 0),
    ):
        with pytest.raises(InvalidRequest):
            check_options(*bad)


def test_every_state_has_a_way_out() -> None:
    reachable = {target for moves in TRANSITIONS.values() for target in moves.values()}
    assert reachable == {"running", "paused", "stopped", "archived"}
    assert TRANSITIONS["resume"] == {"paused": "running"}
    assert TRANSITIONS["start"]["archived"] == "running"
    assert TRANSITIONS["archive"] == {"stopped": "archived"}  # never from running or paused
    leaving = {state for moves in TRANSITIONS.values() for state in moves}
    assert reachable - {"running"} <= leaving


def test_auto_archive_option() -> None:
    assert check_auto_archive("workspace", None) is None
    assert check_auto_archive("workspace", 60) == 60.0
    for bad in (("ephemeral", 60), ("workspace", 0), ("workspace", 10**9)):
        with pytest.raises(InvalidRequest):
            check_auto_archive(*bad)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/proc",
        "/proc/1",
        "/sys/x",
        "/dev",
        "/.stockade/run",
        "/etc/resolv.conf",
        "data",
        "/a/../etc",
        "/a\x00b",
    ],
)
def test_refused_mount_paths(path: str) -> None:
    with pytest.raises(InvalidRequest):
        check_mount_path(path)


def test_accepted_mount_paths() -> None:
    assert check_mount_path("/data") == "/data"
    assert check_mount_path("/home/user/data/") == "/home/user/data"
    assert check_mount_path("/procfs") == "/procfs"
    assert check_mount_path("/a/./b") == "/a/b"


def test_manifest_catches_damage(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.img").write_bytes(b"x" * 100_000)
    with pytest.raises(CheckpointCorrupt, match="no readable manifest"):
        verify(tmp_path)
    seal(tmp_path)
    verify(tmp_path)
    with open(tmp_path / "checkpoint.img", "r+b") as f:
        f.seek(50_000)
        f.write(b"y")
    with pytest.raises(CheckpointCorrupt, match="checksum"):
        verify(tmp_path)
    (tmp_path / "checkpoint.img").write_bytes(b"x" * 10)
    with pytest.raises(CheckpointCorrupt, match="truncated"):
        verify(tmp_path)
    (tmp_path / "checkpoint.img").unlink()
    with pytest.raises(CheckpointCorrupt, match="missing"):
        verify(tmp_path)

"""The host package's own promises: one lock helper that waits, times out and shares as asked;
``mounts_under`` that finds mounts with odd names in unmount order; deletion that never crosses
a mount; ownership shifted back out of a sandbox's uid range."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stockade import host
from stockade.runtimes.base import DriverError


def test_acquire_times_out_on_a_held_lock_and_shares_a_shared_one(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"

    async def scenario() -> None:
        held = await host.acquire(lock)
        assert held is not None
        try:
            assert await host.acquire(lock, timeout=0.2) is None
            assert await host.acquire(lock, shared=True, timeout=0.2) is None
        finally:
            os.close(held)
        first = await host.acquire(lock, shared=True, timeout=1)
        second = await host.acquire(lock, shared=True, timeout=1)
        assert first is not None and second is not None
        assert await host.acquire(lock, timeout=0.2) is None  # exclusive waits for readers
        os.close(first)
        os.close(second)
        async with host.flocked_async(lock):
            with host.flocked(lock, blocking=False) as fd:
                assert fd is None  # held by the block above
        with host.flocked(lock, blocking=False) as fd:
            assert fd is not None
            assert "pid" in host.lock_holders(lock)

    asyncio.run(scenario())


def test_mounts_under_decodes_names_and_orders_for_unmounting(tmp_path: Path) -> None:
    outer = tmp_path / "with space"
    inner = outer / "inner"
    outer.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(outer)], check=True)
    try:
        inner.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(inner)], check=True)
        assert host.mounts_under(tmp_path) == [inner, outer]  # deepest first
        with pytest.raises(OSError, match="mounts below it"):
            host.safe_rmtree(tmp_path)
        assert outer.is_dir() and inner.is_dir()  # nothing deleted
        host.unmount(inner)
        host.unmount(inner)  # idempotent
        assert host.mounts_under(tmp_path) == [outer]
    finally:
        for point in host.mounts_under(tmp_path):
            host.unmount(point)
    host.safe_rmtree(outer)
    assert not outer.exists()


def test_unshift_owners_maps_the_sandbox_range_back_and_the_rest_to_nobody(tmp_path: Path) -> None:
    base = 100000
    tree = tmp_path / "rootfs"
    (tree / "home").mkdir(parents=True)
    (tree / "home" / "file").write_text("x")
    (tree / "stray").write_text("y")
    os.chown(tree, base, base)
    os.chown(tree / "home", base + 1000, base + 1000)
    os.chown(tree / "home" / "file", base + 1000, base + 1000)
    os.chown(tree / "stray", 5, 5)  # not from the sandbox's range
    host.unshift_owners(tree, base)
    owners = {
        p.name: (p.stat().st_uid, p.stat().st_gid)
        for p in (tree, tree / "home", tree / "home" / "file", tree / "stray")
    }
    assert owners == {"rootfs": (0, 0), "home": (1000, 1000), "file": (1000, 1000), "stray": (65534, 65534)}


def test_a_failing_host_command_is_a_driver_error_with_what_it_printed() -> None:
    with pytest.raises(DriverError, match="No such file or directory"):
        asyncio.run(host.run("ls", "/nonexistent-stockade-path"))
    assert asyncio.run(host.run("echo", "ok")) == "ok\n"


def test_a_private_namespace_lets_go_of_other_sandboxes_disks(tmp_path: Path) -> None:
    """A long-lived private mount namespace (a networked runsc, an image build) would keep a
    copy of every sandbox's mount alive after the host unmounts it; its start snippet detaches
    them, all but its own sandbox's."""
    if os.geteuid() != 0:
        pytest.fail("needs root (mounts)")
    own, other = tmp_path / "sandboxes" / "sbown", tmp_path / "sandboxes" / "sbother"
    for d in (own / "disk", other / "disk"):
        d.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(d)], check=True)
    try:
        for keep, expected in ((own, {own / "disk"}), (None, set())):
            seen = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 host.detach_sandbox_mounts(keep) + "; cut -d' ' -f5 /proc/self/mountinfo"],
                check=True, capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
            assert {Path(m) for m in seen if m.startswith(str(tmp_path))} == expected, keep
        assert host.mounted(own / "disk") and host.mounted(other / "disk")  # the host's stay
    finally:
        for d in (own / "disk", other / "disk"):
            host.unmount(d)


def test_the_pids_of_a_cgroup_removed_meanwhile_are_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A sandbox's cgroup may vanish between finding it and reading it (its stop): no pids, no
    error (CI saw FileNotFoundError escape from a fault-injection lookup)."""
    from stockade.host import cgroups

    class Vanishing(type(tmp_path)):  # type: ignore[misc]
        def rglob(self, pattern: str) -> Any:
            raise FileNotFoundError(2, "No such file or directory", str(self))  # removed mid-walk

    monkeypatch.setattr(cgroups, "cgroup_dirs", lambda relative: [Vanishing(tmp_path / "gone")])
    assert host.cgroup_pids("stockade-x/sb0") == set()

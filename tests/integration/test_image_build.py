"""Build the real base image with mmdebstrap (needs root and the Debian mirror; 2 to 4 minutes)."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.images import ImageStore, build_base_image
from stockade.host import mounts_under, safe_rmtree

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.timeout(900),
]

SRC = str(Path(__file__).resolve().parents[2] / "src")
CHILD = """
import sys
from pathlib import Path
from stockade.images import ImageStore, build_base_image
build_base_image(ImageStore(Path(sys.argv[1])), progress=lambda s, f: print(s, flush=True))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageStore]:
    root = tmp_path_factory.mktemp("image-build") / "images"
    yield ImageStore(root)
    for pgid in build_process_groups(root):  # a failed test may leave a build running
        os.killpg(pgid, signal.SIGKILL)
    time.sleep(0.5)
    safe_rmtree(root.parent, unmount=True)  # don't leave 300 MB in /tmp


def build_process_groups(root: Path) -> set[int]:
    """Process groups of the builds running in ``root`` (their TMPDIR is the build directory)."""
    groups = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if any(e.startswith(f"TMPDIR={root}/.build-".encode()) for e in env):
                groups.add(os.getpgid(int(pid)))
        except (OSError, ProcessLookupError):
            continue
    return groups


def test_killed_build_leaves_no_mounts_and_is_swept(store: ImageStore) -> None:
    """SIGKILL the whole build mid-install: mounts die with it; the next build sweeps the rest."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store.root)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        start_new_session=True,
    ) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                if line.startswith("installing essential"):  # chroot mounts go up now
                    time.sleep(3)
                    assert mounts_under(store.root) == []  # they are in the build's namespace
                    break
            else:
                pytest.fail("the build ended before installing essential packages")
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            for pgid in build_process_groups(store.root):  # mmdebstrap has a group of its own
                os.killpg(pgid, signal.SIGKILL)
    time.sleep(1)  # let the killed process group's mount namespace go
    leftovers = [p for p in store.root.iterdir() if p.name.startswith(".build-base-")]
    assert len(leftovers) == 1 and leftovers[0].is_dir()
    assert mounts_under(store.root) == []
    assert not store.exists("base")
    assert build_process_groups(store.root) == set()


def test_interrupted_build_cleans_up(store: ImageStore) -> None:
    raised: list[float] = []

    def progress(stage: str, fraction: float | None) -> None:
        if stage == "installing essential packages":
            raised.append(time.monotonic())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_base_image(store, progress=progress)
    print(f"\ninterrupted build stopped and cleaned up in {time.monotonic() - raised[0]:.1f} s")
    assert [p.name for p in store.root.iterdir() if not p.name.endswith(".lock")] == []
    assert mounts_under(store.root) == []


def test_build_base_image(store: ImageStore, caplog: pytest.LogCaptureFixture) -> None:
    stages: list[tuple[str, float | None]] = []
    started = time.monotonic()

    def progress(stage: str, fraction: float | None) -> None:
        stages.append((stage, fraction))
        print(f"{time.monotonic() - started:6.1f} s  {fraction}  {stage}")

    print()
    info = build_base_image(store, progress=progress)
    elapsed = time.monotonic() - started
    print(f"base image built in {elapsed:.1f} s: {info.size_bytes >> 20} MiB, {info.files} files")

    names = [s for s, _ in stages]
    for expected in ("updating package lists", "downloading packages", "installing packages", "done"):
        assert expected in names
    fractions = [f for _, f in stages if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    assert [i.name for i in store.list()] == ["base"]
    assert info.python == "/usr/bin/python3"
    assert info.source == "mmdebstrap bookworm" and "python3" in info.packages
    assert info.size_bytes > 100 << 20 and info.files > 5000
    assert json.loads((info.path / "image.json").read_text())["name"] == "base"
    assert [p.name for p in store.root.iterdir() if not p.name.endswith(".lock")] == ["base"]

    rootfs = store.rootfs("base")
    run = subprocess.run(["chroot", str(rootfs), "python3", "-c", "print(1)"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == "1\n", run.stderr
    run = subprocess.run(["chroot", str(rootfs), "id", "user"], capture_output=True, text=True)
    assert run.stdout.startswith("uid=1000(user) gid=1000(user)"), run.stdout + run.stderr
    home = os.stat(rootfs / "home/user")
    assert (home.st_uid, home.st_gid) == (1000, 1000)
    mount_point = os.stat(rootfs / ".stockade")
    assert oct(mount_point.st_mode & 0o7777) == "0o755" and mount_point.st_uid == 0
    assert os.listdir(rootfs / ".stockade") == []
    assert (rootfs / "etc/hostname").read_text() == "sandbox\n"
    assert (rootfs / "etc/resolv.conf").read_text() == ""
    assert "user:" not in (rootfs / "etc/group").read_text().split("sudo:")[-1].split("\n")[0]
    dev_modes = [os.lstat(e).st_mode for e in (rootfs / "dev").iterdir()]
    assert not any(stat.S_ISCHR(m) or stat.S_ISBLK(m) for m in dev_modes)

    # Idempotent: a second build is a no-op.
    again = time.monotonic()
    assert build_base_image(store) == info
    assert time.monotonic() - again < 1

    # The id-mapped copy runc needs for its user namespace.
    with caplog.at_level(logging.INFO, logger="stockade.images"):
        mapped = store.idmapped_rootfs("base", 200000)
    print(caplog.records[-1].getMessage())
    assert os.stat(mapped / "home/user").st_uid == 201000
    assert os.lstat(mapped / "usr/bin/python3").st_uid == 200000
    run = subprocess.run(["chroot", str(mapped), "python3", "-c", "print(1)"], capture_output=True, text=True)
    assert run.stdout == "1\n", run.stderr

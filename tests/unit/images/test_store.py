"""Unit tests of the image store and id-mapped copies, on tiny fake root filesystems."""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stockade.images import (
    CorruptImage,
    IdOutOfRange,
    ImageExists,
    ImageInUse,
    ImageNotFound,
    ImageStore,
    InvalidImageName,
    import_rootfs_tar,
)
from stockade.images import idmap as idmap_mod
from stockade.images.build import parse_progress

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")

BASE = 100000


def make_rootfs(path: Path, outside: Path) -> None:
    """A small tree with the awkward cases: ids, set-id bits, symlinks, hard links, a FIFO."""
    path.mkdir(mode=0o755)
    for d in ("etc", "bin", "home/user", "tmp", "dev"):
        (path / d).mkdir(parents=True)
    os.chmod(path / "tmp", 0o1777)
    (path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    os.chmod(path / "etc/passwd", 0o644)
    (path / "bin/tool").write_bytes(b"\x7fELF" + os.urandom(70000))
    os.chmod(path / "bin/tool", 0o4755)
    os.link(path / "bin/tool", path / "bin/tool-again")
    (path / "home/user/notes").write_text("mine")
    os.chmod(path / "home/user/notes", 0o600)
    os.chown(path / "home/user/notes", 1000, 1000)
    os.chown(path / "home/user", 1000, 1000)
    os.chmod(path / "home/user", 0o700)
    os.symlink("../etc/passwd", path / "bin/rel-link")
    os.symlink(str(outside), path / "bin/escape")  # must not be followed
    os.lchown(path / "bin/escape", 1000, 1000)
    os.symlink("/nowhere", path / "bin/dangling")
    os.mkfifo(path / "tmp/fifo", 0o620)
    os.utime(path / "etc/passwd", ns=(1_000_000_000_000_000_000, 1_200_000_000_000_000_000))
    os.utime(path / "etc", ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    f = tmp_path / "outside.txt"
    f.write_text("host file")
    return f


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def add_image(store: ImageStore, name: str, outside: Path, *, replace: bool = False) -> None:
    with store.staging(name) as staging:
        make_rootfs(staging.path / "rootfs", outside)
        store.install(name, staging, source="test", packages=["a", "b"], replace=replace)


# -- names, listing, lookup -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "Base", "-x", ".x", "a/b", "..", "a" * 64, "ä", "a b"])
def test_invalid_names_are_refused(store: ImageStore, name: str) -> None:
    for call in (store.get, store.exists, store.remove, store.rootfs):
        with pytest.raises(InvalidImageName, match="invalid image name"):
            call(name)
    assert issubclass(InvalidImageName, ValueError)


@pytest.mark.parametrize("name", ["base", "0", "py3.11_slim-x", "a" * 63])
def test_valid_names(store: ImageStore, name: str) -> None:
    assert store.exists(name) is False


def test_empty_store(store: ImageStore) -> None:
    assert store.list() == []
    with pytest.raises(ImageNotFound, match="stockade image build") as e:
        store.get("base")
    assert "'base'" in str(e.value) and isinstance(e.value, LookupError)


@needs_root
def test_list_get_and_metadata(store: ImageStore, outside: Path) -> None:
    add_image(store, "zeta", outside)
    add_image(store, "alpha", outside)
    (store.root / "half-built").mkdir()  # no image.json: not an image
    (store.root / ".hidden").mkdir()
    assert [i.name for i in store.list()] == ["alpha", "zeta"]
    info = store.get("alpha")
    assert info.source == "test" and info.packages == ("a", "b")
    assert info.python is None
    assert info.files == 14  # 6 directories, 8 other entries
    assert info.size_bytes > 70000
    assert info.rootfs == store.root / "alpha" / "rootfs" == store.rootfs("alpha")
    assert info.created.tzinfo is not None
    data = json.loads((store.root / "alpha" / "image.json").read_text())
    assert data == info.to_json()
    assert set(data) >= {"name", "created", "source", "packages", "size_bytes", "files", "python"}
    with pytest.raises(ImageExists):
        add_image(store, "alpha", outside)


@needs_root
def test_python_is_detected_through_symlinks(store: ImageStore, tmp_path: Path) -> None:
    with store.staging("py") as staging:
        rootfs = staging.path / "rootfs"
        (rootfs / "usr/bin").mkdir(parents=True)
        os.symlink("usr/bin", rootfs / "bin")
        (rootfs / "usr/bin/python3.11").write_text("#!")
        os.chmod(rootfs / "usr/bin/python3.11", 0o755)
        os.symlink("python3.11", rootfs / "usr/bin/python3")
        store.install("py", staging, source="test")
    assert store.get("py").python == "/usr/bin/python3"


def test_corrupt_image_json(store: ImageStore) -> None:
    (store.root / "bad").mkdir(parents=True)
    (store.root / "bad" / "image.json").write_text("{not json")
    with pytest.raises(CorruptImage):
        store.get("bad")
    assert store.list() == []


# -- removing ---------------------------------------------------------------------------------


@needs_root
def test_remove(store: ImageStore, outside: Path) -> None:
    add_image(store, "base", outside)
    store.idmapped_rootfs("base", BASE)
    store.remove("base")
    assert not store.exists("base")
    assert sorted(os.listdir(store.root)) == [".build-base.lock"]
    with pytest.raises(ImageNotFound):
        store.remove("base")
    assert outside.read_text() == "host file"


@needs_root
def test_remove_sweeps_interrupted_removals(store: ImageStore, outside: Path) -> None:
    add_image(store, "a", outside)
    add_image(store, "b", outside)
    os.rename(store.root / "a", store.root / ".trash-a-0123456789ab")  # killed mid-removal
    store.remove("b")
    assert not [e for e in os.listdir(store.root) if e.startswith(".trash-")]


@needs_root
def test_remove_refuses_a_mounted_image(store: ImageStore, outside: Path) -> None:
    add_image(store, "base", outside)
    point = store.root / "base" / "rootfs" / "tmp"
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(point)], check=True)
    try:
        with pytest.raises(ImageInUse, match="in use"):
            store.remove("base")
        assert store.exists("base")
    finally:
        subprocess.run(["umount", str(point)], check=True)
    store.remove("base")


@needs_root
def test_replace_swaps_atomically_and_cleans_up(store: ImageStore, outside: Path) -> None:
    add_image(store, "base", outside)
    old = store.idmapped_rootfs("base", BASE)
    first = os.stat(store.root / "base" / "rootfs").st_ino
    first_copy = os.stat(old).st_ino
    add_image(store, "base", outside, replace=True)
    assert os.stat(store.root / "base" / "rootfs").st_ino != first
    # The old id-mapped copy went with the old image; the new image has its own, made before
    # the swap, so a path an engine looked up just before it still leads somewhere after.
    assert os.stat(old).st_ino != first_copy
    assert os.stat(old / "home/user/notes").st_uid == BASE + 1000
    assert [e for e in os.listdir(store.root) if not e.endswith(".lock")] == ["base"]


@needs_root
def test_staging_removes_leftovers_of_interrupted_builds(store: ImageStore, outside: Path) -> None:
    store.root.mkdir()
    stale = store.root / ".build-base-0123456789ab"
    (stale / "rootfs" / "etc").mkdir(parents=True)
    other = store.root / ".build-base-x-0123456789ab"  # belongs to image "base-x": kept
    other.mkdir()
    with store.staging("base") as staging:
        assert not stale.exists() and other.exists()
        assert staging.path.name.startswith(".build-base-")
        raise_here = staging.path
    assert not raise_here.exists()  # not installed: deleted on exit


# -- id-mapped copies --------------------------------------------------------------------------


@needs_root
def test_idmapped_copy_shifts_ids_and_keeps_everything_else(store: ImageStore, outside: Path) -> None:
    add_image(store, "base", outside)
    src = store.rootfs("base")
    dst = store.idmapped_rootfs("base", BASE)
    assert dst == store.root / "base" / f"rootfs-idmap-{BASE}"
    pairs = [(src, dst)]
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            pairs.append((p, dst / p.relative_to(src)))
    assert len(pairs) == 15
    for a, b in pairs:
        sa, sb = os.lstat(a), os.lstat(b)
        assert (sb.st_uid, sb.st_gid) == (sa.st_uid + BASE, sa.st_gid + BASE), a
        assert sb.st_mode == sa.st_mode, a
        if not stat.S_ISDIR(sa.st_mode):
            assert sb.st_mtime_ns == sa.st_mtime_ns, a
        if stat.S_ISLNK(sa.st_mode):
            assert os.readlink(b) == os.readlink(a)
        elif stat.S_ISREG(sa.st_mode):
            assert b.read_bytes() == a.read_bytes()
    assert os.lstat(dst / "etc").st_mtime_ns == os.lstat(src / "etc").st_mtime_ns
    assert os.lstat(dst / "home/user/notes").st_uid == BASE + 1000
    assert stat.S_IMODE(os.lstat(dst / "bin/tool").st_mode) == 0o4755  # set-uid survives chown
    assert os.lstat(dst / "bin/tool").st_ino == os.lstat(dst / "bin/tool-again").st_ino
    assert stat.S_ISFIFO(os.lstat(dst / "tmp/fifo").st_mode)
    # The escaping symlink was neither followed nor copied through.
    assert os.lstat(outside).st_uid == 0 and outside.read_text() == "host file"
    assert os.lstat(dst / "bin/escape").st_uid == BASE + 1000
    # The original is untouched.
    assert os.lstat(src / "etc/passwd").st_uid == 0
    assert store.idmapped_rootfs("base", BASE) == dst


@needs_root
def test_idmapped_copy_removes_stale_tmp_dirs(store: ImageStore, outside: Path) -> None:
    add_image(store, "base", outside)
    stale = store.root / "base" / ".tmp-0123456789ab"
    (stale / "etc").mkdir(parents=True)  # a copy killed half-way
    store.idmapped_rootfs("base", BASE)
    assert not stale.exists()
    (stale / "etc").mkdir(parents=True)
    store.idmapped_rootfs("base", BASE)  # the fast path sweeps too when uncontended
    assert not stale.exists()


@needs_root
def test_failed_copy_leaves_nothing(
    store: ImageStore, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_image(store, "base", outside)
    real = idmap_mod.shift_copy

    def crash(src: Path, dst: Path, uid_base: int, size: int = 65536) -> None:
        real(src, dst, uid_base, size)
        raise KeyboardInterrupt

    monkeypatch.setattr(idmap_mod, "shift_copy", crash)
    with pytest.raises(KeyboardInterrupt):
        store.idmapped_rootfs("base", BASE)
    assert sorted(os.listdir(store.root / "base")) == [".lock", "image.json", "rootfs"]


@needs_root
def test_ids_outside_the_range_are_refused(store: ImageStore, outside: Path) -> None:
    add_image(store, "base", outside)
    with pytest.raises(IdOutOfRange, match="outside the mapped range"):
        store.idmapped_rootfs("base", BASE, size=1000)  # /home/user is uid 1000
    assert not list((store.root / "base").glob("rootfs-idmap-*"))
    assert not list((store.root / "base").glob(".tmp-*"))


@needs_root
@pytest.mark.parametrize("base,size", [(0, 65536), (-1, 10), (1, 0), (2**32 - 10, 65536)])
def test_bad_ranges(store: ImageStore, outside: Path, base: int, size: int) -> None:
    add_image(store, "base", outside)
    with pytest.raises(ValueError, match="bad id range"):
        store.idmapped_rootfs("base", base, size)


def test_idmapped_copy_of_unknown_image(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound):
        store.idmapped_rootfs("nope", BASE)


@needs_root
def test_concurrent_copies_agree(store: ImageStore, outside: Path) -> None:
    add_image(store, "base", outside)
    bases = [BASE, BASE, BASE + 65536, BASE, BASE + 65536, BASE]
    with ThreadPoolExecutor(len(bases)) as pool:
        paths = list(pool.map(lambda b: store.idmapped_rootfs("base", b), bases))
    assert paths == [store.root / "base" / f"rootfs-idmap-{b}" for b in bases]
    assert sorted(os.listdir(store.root / "base")) == [
        ".lock", "image.json", "rootfs", f"rootfs-idmap-{BASE}", f"rootfs-idmap-{BASE + 65536}",
    ]  # fmt: skip


@needs_root
def test_device_nodes_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with caplog.at_level(logging.WARNING):
        stats = idmap_mod.shift_copy(src, tmp_path / "dst", BASE)
    assert stats.skipped == 1 and not (tmp_path / "dst" / "null").exists()
    assert "skipping" in caplog.text


@needs_root
def test_file_capabilities_are_rebased(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ping").write_bytes(b"x")
    # v2 capability: effective flag, cap_net_raw (13) permitted.
    v2 = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    try:
        os.setxattr(src / "ping", "security.capability", v2)
    except OSError as e:
        pytest.skip(f"no file capabilities here: {e}")
    idmap_mod.shift_copy(src, tmp_path / "dst", BASE)
    got = os.getxattr(tmp_path / "dst" / "ping", "security.capability")
    assert struct.unpack("<IIIIII", got) == (0x03000001, 1 << 13, 0, 0, 0, BASE)


def test_shift_capability_formats() -> None:
    v3 = struct.pack("<IIIIII", 0x03000000, 1, 2, 3, 4, 5)
    assert struct.unpack("<6I", idmap_mod.shift_capability(v3, 10, 100) or b"")[-1] == 15
    assert idmap_mod.shift_capability(v3, 10, 5) is None  # rootid outside the range
    assert idmap_mod.shift_capability(b"\x00\x00\x00\x01" + bytes(8), 10, 100) is None  # v1


# -- tar import and build progress ------------------------------------------------------------


@needs_root
def test_import_rootfs_tar(store: ImageStore, tmp_path: Path, outside: Path) -> None:
    tree = tmp_path / "tree"
    make_rootfs(tree, outside)
    os.mknod(tree / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    tar_path = tmp_path / "rootfs.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(tree, arcname=".")
    info = import_rootfs_tar(store, "imported", tar_path)
    assert info.source == "tar rootfs.tar.gz"
    rootfs = store.rootfs("imported")
    assert os.lstat(rootfs / "home/user/notes").st_uid == 1000
    assert stat.S_IMODE(os.lstat(rootfs / "bin/tool").st_mode) == 0o4755
    assert os.readlink(rootfs / "bin/escape") == str(outside)
    assert not (rootfs / "dev/null").exists()  # runtimes bring their own /dev
    assert (rootfs / ".stockade").is_dir()
    with pytest.raises(ImageExists):
        import_rootfs_tar(store, "imported", tar_path)
    assert import_rootfs_tar(store, "imported", tar_path, force=True).name == "imported"
    assert [e for e in os.listdir(store.root) if not e.endswith(".lock")] == ["imported"]


def test_parse_progress() -> None:
    assert parse_progress("I: running apt-get update...\n") == ("updating package lists", 0.01)
    assert parse_progress("I: installing remaining packages inside the chroot...") == (
        "installing packages",
        0.58,
    )
    assert parse_progress("I: something new...") == ("something new", None)
    assert parse_progress("W: disk is slow") == ("warning: disk is slow", None)
    assert parse_progress("Get:1 http://deb.debian.org bookworm InRelease") is None

"""engine/archive.py on a real sparse layer file: round trip, corruption, and every half state
an engine killed mid-archive or mid-restore can leave (settle() must lose nothing)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from stockade.engine import archive

pytestmark = pytest.mark.skipif(shutil.which("lz4") is None, reason="lz4 not installed")


def make_layer(directory: Path) -> tuple[Path, str]:
    """A 64 MiB sparse file with data at a few places (like a mostly empty ext4 image)."""
    layer = directory / "disk.img"
    with open(layer, "wb") as f:
        f.truncate(64 << 20)
        for offset in (0, 7 << 20, 50 << 20):
            f.seek(offset)
            f.write(os.urandom(1 << 20) + b"text " * 50000)
    return layer, digest(layer)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sandbox_dir(tmp_path: Path) -> Path:
    return tmp_path


def test_round_trip_keeps_bytes_and_holes(sandbox_dir: Path) -> None:
    layer, before = make_layer(sandbox_dir)
    info = asyncio.run(archive.archive(layer, sandbox_dir))
    assert info.layer_bytes == 64 << 20 and 0 < info.archive_bytes < info.stored_bytes
    archive.drop_layer(layer)
    assert archive.settle(layer, sandbox_dir) == "archived"
    asyncio.run(archive.restore(layer, sandbox_dir))
    assert digest(layer) == before
    assert layer.stat().st_blocks * 512 < 16 << 20  # holes restored as holes
    assert sorted(p.name for p in sandbox_dir.iterdir()) == ["disk.img"]


def test_killed_mid_archive_keeps_the_layer(sandbox_dir: Path) -> None:
    layer, before = make_layer(sandbox_dir)
    # A half-written archive (tar was still writing), then the same after its rename but
    # before the layer went: either way the layer is the truth and the leftovers go.
    (sandbox_dir / (archive.ARCHIVE + ".tmp")).write_bytes(b"partial")
    assert archive.settle(layer, sandbox_dir) == "stopped"
    asyncio.run(archive.archive(layer, sandbox_dir))
    assert archive.settle(layer, sandbox_dir) == "stopped"
    assert digest(layer) == before
    assert sorted(p.name for p in sandbox_dir.iterdir()) == ["disk.img"]


def test_killed_mid_restore_keeps_the_archive(sandbox_dir: Path) -> None:
    layer, before = make_layer(sandbox_dir)
    asyncio.run(archive.archive(layer, sandbox_dir))
    archive.drop_layer(layer)
    staging = sandbox_dir / archive.RESTORE_DIR  # a half-extracted layer
    staging.mkdir()
    (staging / "disk.img").write_bytes(b"half")
    assert archive.settle(layer, sandbox_dir) == "archived"
    assert not staging.exists() and archive.verify(sandbox_dir)
    asyncio.run(archive.restore(layer, sandbox_dir))
    assert digest(layer) == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_damaged_archive_is_reported_and_kept(sandbox_dir: Path, damage: str) -> None:
    layer, _ = make_layer(sandbox_dir)
    asyncio.run(archive.archive(layer, sandbox_dir))
    archive.drop_layer(layer)
    path = archive.archive_path(sandbox_dir)
    if damage == "truncate":
        os.truncate(path, path.stat().st_size // 2)
        expected = "truncated"
    elif damage == "flip":
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        expected = "checksum"
    else:
        (sandbox_dir / archive.MANIFEST).write_text("{")
        expected = "manifest"
    with pytest.raises(archive.ArchiveCorrupt, match=expected):
        asyncio.run(archive.restore(layer, sandbox_dir))
    assert path.exists() and not layer.exists()  # nothing thrown away
    assert archive.settle(layer, sandbox_dir) == "archived"


def test_a_damaged_archive_with_a_valid_manifest_fails_to_unpack(sandbox_dir: Path) -> None:
    """Damage that the manifest cannot see (rewritten to match) is caught by lz4's checksums."""
    layer, _ = make_layer(sandbox_dir)
    asyncio.run(archive.archive(layer, sandbox_dir))
    archive.drop_layer(layer)
    path = archive.archive_path(sandbox_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    manifest = archive.json.loads((sandbox_dir / archive.MANIFEST).read_text())
    manifest["crc32"] = archive.file_crc32(path)
    (sandbox_dir / archive.MANIFEST).write_text(archive.json.dumps(manifest))
    with pytest.raises(archive.ArchiveCorrupt, match="cannot be unpacked"):
        asyncio.run(archive.restore(layer, sandbox_dir))
    assert path.exists() and not layer.exists()
    assert not (sandbox_dir / archive.RESTORE_DIR).exists()

"""Background build jobs' file store: per-owner uploads by hash, checked names, expiry."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import AsyncIterator

import pytest

from stockade.engine import InvalidRequest, NotFound
from stockade.engine.build_jobs import FILE_KEEP, BuildJobs


def jobs(tmp_path: Path) -> BuildJobs:
    return BuildJobs(SimpleNamespace(config=SimpleNamespace(data_dir=tmp_path)))  # type: ignore[arg-type]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_files_are_per_owner_and_names_are_hashes(tmp_path: Path) -> None:
    store = jobs(tmp_path)
    digest = "ab" * 32
    assert not store.has_file("a", digest)
    await store.save_file("a", digest, chunks(b"x", b"y"))
    assert store.has_file("a", digest) and not store.has_file("b", digest)
    assert (tmp_path / "builds" / "files" / "a" / digest).read_bytes() == b"xy"
    for bad in ("../../etc/passwd", "AB" * 32, "abc", "ab" * 32 + "/x"):
        with pytest.raises(InvalidRequest):
            store.has_file("a", bad)
    with pytest.raises(NotFound):
        store.status("nope", lambda owner: True)


async def test_an_oversized_upload_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stockade.engine.build_jobs.MAX_FILE", 4)
    store = jobs(tmp_path)
    with pytest.raises(InvalidRequest, match="at most"):
        await store.save_file("a", "cd" * 32, chunks(b"123", b"456"))
    assert list((tmp_path / "builds" / "files" / "a").iterdir()) == []


async def test_unused_files_expire(tmp_path: Path) -> None:
    store = jobs(tmp_path)
    old, new = "01" * 32, "02" * 32
    await store.save_file("a", old, chunks(b"o"))
    await store.save_file("a", new, chunks(b"n"))
    stale = time.time() - FILE_KEEP - 60
    os.utime(tmp_path / "builds" / "files" / "a" / old, (stale, stale))
    store._sweep()
    assert not store.has_file("a", old) and store.has_file("a", new)

"""End records (engine/tombstones.py): bounded by count and by age, on disk across restarts."""

from __future__ import annotations

import time
from pathlib import Path

from stockade.engine.tombstones import Tombstones
from stockade.models import SandboxInfo


def _ended(sandbox_id: str, ended_at: float) -> SandboxInfo:
    return SandboxInfo(id=sandbox_id, isolation="container", template="base", state="ended",
                       reason="killed", cpu=1, memory_mb=512, disk_mb=1024, pids=512,
                       created_at=ended_at - 10, expires_at=ended_at + 60, timeout=300,
                       ended_at=ended_at)


def test_records_older_than_the_retention_go_and_the_rest_survive_a_restart(tmp_path: Path) -> None:
    now = time.time()
    kept = Tombstones(tmp_path / "ended", keep=10, retention=3600)
    kept.load()
    kept.add(_ended("sbold", now - 7200))  # past the retention: gone at once
    kept.add(_ended("sbnew", now))
    assert kept.get("sbold") is None and kept.get("sbnew") is not None
    assert sorted(p.name for p in (tmp_path / "ended").iterdir()) == ["sbnew.json"]
    (tmp_path / "ended" / "sbbad.json").write_text("{not json")
    again = Tombstones(tmp_path / "ended", keep=10, retention=3600)
    again.load()  # an unreadable record is dropped, not fatal
    assert [i.id for i in again.list()] == ["sbnew"]
    assert again.get("sbnew") == kept.get("sbnew")
    assert not (tmp_path / "ended" / "sbbad.json").exists()


def test_keep_zero_keeps_nothing(tmp_path: Path) -> None:
    none = Tombstones(tmp_path / "ended", keep=0, retention=3600)
    none.load()
    none.add(_ended("sbx", time.time()))
    assert none.list() == [] and list((tmp_path / "ended").iterdir()) == []

"""End records (engine/ends.py) and the event hub (engine/events.py): bounded, owner-tagged."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from stockade.engine.ends import EndRecords
from stockade.engine.events import Events
from stockade.models import SandboxEnd, SandboxInfo


def _end(sandbox_id: str, ended_at: float) -> SandboxEnd:
    info = SandboxInfo(
        id=sandbox_id,
        isolation="container",
        template="base",
        state="ended",
        cpu=1,
        memory_mb=512,
        disk_mb=1024,
        pids=512,
        created_at=ended_at - 10,
        expires_at=ended_at,
        timeout=300,
    )
    return SandboxEnd(
        id=sandbox_id, reason="killed", message="killed by the user", ended_at=ended_at, sandbox=info
    )


def test_end_records_are_bounded_by_age_and_count_and_survive_a_restart(tmp_path: Path) -> None:
    now = time.time()
    kept = EndRecords(tmp_path / "ended", keep=2, retention=3600)
    kept.load()
    kept.add("acme", _end("sbold", now - 7200))  # past the retention: gone at once
    for name in ("sba", "sbb", "sbc"):  # one more than kept: the oldest goes
        kept.add("acme", _end(name, now))
    assert kept.get("sbold") is None and kept.get("sba") is None
    assert sorted(p.name for p in (tmp_path / "ended").iterdir()) == ["sbb.json", "sbc.json"]
    (tmp_path / "ended" / "sbbad.json").write_text("{not json")
    again = EndRecords(tmp_path / "ended", keep=2, retention=3600)
    again.load()  # an unreadable record is dropped, not fatal
    assert again.get("sbc") == ("acme", kept.get("sbc")[1])  # type: ignore[index]
    assert not (tmp_path / "ended" / "sbbad.json").exists()


def test_events_reach_only_the_subscribers_allowed_to_see_them() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        hub = Events()
        hub.publish("acme", "sb1", "running", "created")  # before anyone subscribed
        seen: dict[str, list[str]] = {"acme": [], "other": [], "replay": []}

        async def follow(who: str, since: int | None = None, key: str | None = None) -> None:
            async for event in hub.follow(lambda owner: owner == who, since):
                seen[key or who].append(f"{event.sandbox_id}:{event.state}")

        tasks = [
            asyncio.create_task(follow("acme")),
            asyncio.create_task(follow("other")),
            asyncio.create_task(follow("acme", since=0, key="replay")),
        ]
        await asyncio.sleep(0)
        hub.publish("acme", "sb1", "paused")
        hub.publish("other", "sb2", "running", "created")
        hub.publish("acme", "sb1", "ended", "killed")
        await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        return seen["acme"], seen["other"], seen["replay"]

    acme, other, replay = asyncio.run(scenario())
    assert acme == ["sb1:paused", "sb1:ended"]
    assert other == ["sb2:running"]
    assert replay == ["sb1:running", "sb1:paused", "sb1:ended"]  # kept ones first, no doubles

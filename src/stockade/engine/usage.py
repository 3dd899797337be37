"""Resource-usage history and what the kernel did to a sandbox's processes (``engine.usage``).

Every :data:`INTERVAL` seconds the engine samples each running sandbox's cgroup (CPU, memory,
pids), the size of its writable layer and its network counters, keeping the last
:data:`HISTORY` samples per sandbox in memory for charts (``GET /sandboxes/{id}/usage``). The same
pass notices what nobody asked for: an OOM kill of one of the sandbox's processes (reported as
an event and as the sandbox's ``reason``, "out of memory (python3)") and a sandbox whose runtime
died at its memory or pids limit (ended at once with that reason, rather than left to hang).
Where the sandbox's own kernel enforces those limits (``RuntimeDriver.limits_inside``: a
microVM's guest), what they killed or refused comes from its agent (``sys.stats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from ..models import UsageHistory, UsageSample
from ..runtimes.base import DriverError, NotSupported, Stats
from ..runtimes.channel import AgentCallError, ChannelClosed
from .errors import SandboxNotFound

if TYPE_CHECKING:
    from .engine import Engine
    from .records import SandboxRecord

log = logging.getLogger("stockade.engine")

#: Seconds between samples (``STOCKADE_USAGE_INTERVAL``) and samples kept per sandbox.
INTERVAL = float(os.environ.get("STOCKADE_USAGE_INTERVAL", "5"))
HISTORY = 120
#: Seconds an agent has to answer ``sys.stats`` (a sandbox too busy to answer is sampled
#: from its host cgroup alone).
AGENT_STATS_TIMEOUT = 2.0


def _disk_bytes(layer: Path) -> int:
    """Bytes used on a sandbox's disk: from its file system where the host mounts it (what
    was just written counts at once), else what its image file holds."""
    mounted = layer.with_suffix("")  # disk.img is mounted at disk/ (the container tiers)
    if os.path.ismount(mounted):
        fs = os.statvfs(mounted)
        return (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    return layer.stat().st_blocks * 512


class Usage:
    """The usage sampler of one engine."""

    def __init__(self, engine: "Engine", interval: float = INTERVAL) -> None:
        self._engine = engine
        self.interval = interval
        self._history: dict[str, deque[UsageSample]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def history(self, sandbox_id: str) -> UsageHistory:
        """The kept samples of a sandbox (SandboxNotFound once it is gone)."""
        self._engine.record(sandbox_id)
        return UsageHistory(interval=self.interval, items=list(self._history.get(sandbox_id, ())))

    def forget(self, sandbox_id: str) -> None:
        self._history.pop(sandbox_id, None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            for record in self._engine.records():
                if record.state != "running":
                    continue
                try:
                    await self.sample(record)
                except (DriverError, OSError, SandboxNotFound):
                    continue
                except Exception:  # never let one sandbox stop the sampling of the others
                    log.exception("sampling sandbox %s failed", record.id)

    async def sample(self, record: "SandboxRecord") -> None:
        """Take one sample of a running sandbox and act on what the kernel did to it."""
        engine = self._engine
        driver = engine.drivers[record.tier]
        stats = await self.stats(record)
        await self.notice(record, stats)
        if record.id not in engine.live_ids():
            return
        history = self._history.setdefault(record.id, deque(maxlen=HISTORY))
        now = time.time()
        cpu_percent = 0.0
        if history and now > history[-1].time:
            used = max(0.0, stats.cpu_seconds - history[-1].cpu_seconds)
            cpu_percent = round(100 * used / (now - history[-1].time), 1)
        disk = None
        with contextlib.suppress(NotSupported, OSError):
            disk = _disk_bytes(driver.layer_file(record.spec))
        traffic = engine.net.traffic(record.id)
        history.append(
            UsageSample(
                time=now,
                cpu_percent=cpu_percent,
                cpu_seconds=stats.cpu_seconds,
                memory_bytes=stats.memory_bytes,
                memory_limit_bytes=stats.memory_limit_bytes,
                pids=stats.pids,
                disk_bytes=disk,
                net_rx_bytes=traffic[0] if traffic else None,
                net_tx_bytes=traffic[1] if traffic else None,
            )
        )

    async def stats(self, record: "SandboxRecord") -> Stats:
        """What a sandbox uses now and what its limits killed or refused: its runtime's host
        cgroup, plus its agent's own where its kernel enforces the limits inside (the OOM kills
        and refused forks of its commands, the victim's name and its process count)."""
        driver = self._engine.drivers[record.tier]
        stats = await driver.stats(record.spec)
        channel = self._engine.open_channel(record.id) if driver.limits_inside else None
        if channel is None or record.state != "running":
            return stats
        try:
            found = await asyncio.wait_for(channel.call("sys.stats"), AGENT_STATS_TIMEOUT)
            victim = found.get("oom_victim")
            return dataclasses.replace(
                stats,
                oom_kills=stats.oom_kills + int(found["oom_kills"]),
                pids_limit_hits=stats.pids_limit_hits + int(found["pids_limit_hits"]),
                pids=int(found["pids"]),
                oom_victim=victim[:64]
                if isinstance(victim, str) and victim.isprintable() and victim
                else None,
            )
        except (
            AgentCallError,
            ChannelClosed,
            asyncio.TimeoutError,
            AttributeError,
            KeyError,
            TypeError,
            ValueError,
        ):  # busy, gone, or an answer the host does not trust
            return stats

    async def notice(self, record: "SandboxRecord", stats: Stats) -> None:
        """Report new OOM kills; end a sandbox whose runtime died at its memory or pids limit."""
        engine = self._engine
        if stats.oom_kills > record.oom_seen:
            record.oom_seen = stats.oom_kills
            await engine.note_oom(record, stats.oom_victim)
        if stats.pids_limit_hits > record.pids_seen:
            record.pids_seen = stats.pids_limit_hits
            engine.note_limit(
                record,
                "pids_limit",
                f"process limit reached ({record.resources.pids} processes and threads): forks refused",
            )
        if stats.oom_kills or stats.pids_limit_hits:
            await engine.end_if_bombed(record.id, stats)

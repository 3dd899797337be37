"""Warm pools: started sandboxes with the default template and limits, kept ready per tier.

A create that asks for the default template and limits, with no network policy and no volume,
claims one (its lifetime, envs and metadata are bound at claim time) instead of waiting for a
disk, an overlay, the runtime and the agent; a background task refills the pool. Unclaimed
sandboxes are invisible to callers and removed when the engine closes (or, after a crash, by
the next engine's recovery, since their state is "pooled").

The pool's size follows demand: between its floor (``$STOCKADE_POOL_SIZE``) and its ceiling
(``$STOCKADE_POOL_MAX``, default 4x the floor) it holds enough sandboxes for the creates
expected while one boots (the rate of the last ``$STOCKADE_POOL_WINDOW`` seconds times the
time a boot takes), so back-to-back creates stay warm; when demand falls, or the host's
available memory drops under 10 %, it shrinks back to its floor. An empty pool is no error: the
create boots its sandbox itself, as it would without a pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .records import SandboxRecord

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("stockade.engine")

#: Seconds of recent creates that the demand estimate looks at.
WINDOW = float(os.environ.get("STOCKADE_POOL_WINDOW", "10"))
#: Share of the host's memory that must stay available for a pool to grow past its floor.
LOW_MEMORY = 0.10


def memory_low() -> bool:
    """Whether less than :data:`LOW_MEMORY` of the host's memory is available."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        info = dict(line.split(":", 1) for line in lines)
        available, total = (int(info[k].split()[0]) for k in ("MemAvailable", "MemTotal"))
    except (OSError, KeyError, ValueError):
        return False
    return available < LOW_MEMORY * total


class WarmPool:
    """Ready sandboxes per tier."""

    def __init__(self, engine: "Engine", sizes: dict[str, int]) -> None:
        self._engine = engine
        self._floor = {tier: n for tier, n in sizes.items() if n > 0}
        ceiling = int(os.environ.get("STOCKADE_POOL_MAX", "0"))
        self._ceiling = {tier: max(n, ceiling or 4 * n) for tier, n in self._floor.items()}
        self._ready: dict[str, list[SandboxRecord]] = {tier: [] for tier in self._floor}
        self._takes: dict[str, collections.deque[float]] = {t: collections.deque() for t in self._floor}
        self._boot_seconds = {tier: 0.5 for tier in self._floor}  # updated as boots are timed
        self._refills: dict[str, asyncio.Task[None]] = {}
        self._reviews: dict[str, asyncio.TimerHandle] = {}

    def take(self, tier: str) -> SandboxRecord | None:
        """A ready sandbox of ``tier``, or None; starts a refill either way."""
        ready = self._ready.get(tier)
        record = ready.pop(0) if ready else None
        if tier in self._floor:
            self._takes[tier].append(time.monotonic())
            # Look again once this create has left the window: the pool may shrink then.
            if old := self._reviews.pop(tier, None):
                old.cancel()
            self._reviews[tier] = asyncio.get_running_loop().call_later(
                WINDOW + 0.1, self._refill, tier)
        self._refill(tier)
        return record

    def target(self, tier: str) -> int:
        """How many ready sandboxes ``tier`` should hold now."""
        floor, ceiling = self._floor[tier], self._ceiling[tier]
        takes, now = self._takes[tier], time.monotonic()
        while takes and takes[0] < now - WINDOW:
            takes.popleft()
        if memory_low():
            return floor
        expected = len(takes) / WINDOW * self._boot_seconds[tier]  # creates during one boot
        return min(ceiling, floor + math.ceil(expected))

    def fill(self) -> None:
        """Start filling every tier's pool in the background."""
        for tier in self._floor:
            self._refill(tier)

    def _refill(self, tier: str) -> None:
        if tier in self._floor and (tier not in self._refills or self._refills[tier].done()):
            self._refills[tier] = asyncio.get_running_loop().create_task(self._top_up(tier))

    async def _top_up(self, tier: str) -> None:
        engine = self._engine
        defaults = engine.config.default_resources
        ready = self._ready[tier]
        while len(ready) != (target := self.target(tier)):
            if len(ready) > target:  # demand fell: the longest-waiting one goes
                with contextlib.suppress(Exception):
                    await engine.drivers[tier].destroy(ready.pop(0).spec)
                continue
            record = engine.new_record(tier, engine.config.default_template, defaults)
            record.state = "pooled"
            started = time.monotonic()
            try:
                await engine.boot(record)
            except Exception as exc:  # noqa: BLE001 - a pool failure must not break creates
                log.warning("could not start a warm %s sandbox: %s", tier, exc)
                return
            seconds = time.monotonic() - started
            self._boot_seconds[tier] = 0.7 * self._boot_seconds[tier] + 0.3 * seconds
            ready.append(record)

    async def drain(self) -> None:
        """Stop refilling and remove every unclaimed sandbox."""
        for review in self._reviews.values():
            review.cancel()
        self._reviews.clear()
        for task in self._refills.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._refills.clear()
        for tier, records in self._ready.items():
            for record in records:
                with contextlib.suppress(Exception):
                    await self._engine.drivers[tier].destroy(record.spec)
            records.clear()

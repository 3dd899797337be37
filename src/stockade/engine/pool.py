"""Warm pools: started sandboxes kept ready per (tier, template, limits).

A create with no network policy and no volume claims a ready sandbox of its tier, template and
limits (its lifetime, envs and metadata are bound at claim time) instead of waiting for a disk,
an overlay, the runtime and the agent; a background task refills the pool. Unclaimed sandboxes
are invisible to callers and removed when the engine closes (or, after a crash, by the next
engine's recovery, since their state is "pooled").

Each pool's size follows demand. The default template with the default limits has a floor
(``$STOCKADE_POOL_SIZE`` per tier); any other (template, limits) of a pooled tier gets a pool
of its own, floor 0, once it is asked for at least :data:`ON_DEMAND_AFTER` times within the
window (at most :data:`MAX_POOLS` pools at once). Between floor and ceiling
(``$STOCKADE_POOL_MAX``, default 4x the floor, at least 4) a pool holds enough sandboxes for
the creates expected while one boots (the rate of the last ``$STOCKADE_POOL_WINDOW`` seconds
times the time a boot takes), so back-to-back creates stay warm; when demand falls, or the
host's available memory drops under 10 %, it shrinks back to its floor. A template that is
rebuilt gets a new pool (the key holds the image's version); one that is deleted loses its
pool first. An empty pool is no error: the create boots its sandbox itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..images import ImageError
from ..runtimes.base import Resources
from .records import SandboxRecord

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("stockade.engine")

#: Seconds of recent creates that the demand estimate looks at.
WINDOW = float(os.environ.get("STOCKADE_POOL_WINDOW", "10"))
#: Share of the host's memory that must stay available for a pool to grow past its floor.
LOW_MEMORY = 0.10
#: Creates of one (tier, template, limits) within the window that give it a pool of its own.
ON_DEMAND_AFTER = 2
#: Pools kept beside the floored ones (each holds up to its ceiling of sandboxes).
MAX_POOLS = 8


def memory_low() -> bool:
    """Whether less than :data:`LOW_MEMORY` of the host's memory is available."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        info = dict(line.split(":", 1) for line in lines)
        available, total = (int(info[k].split()[0]) for k in ("MemAvailable", "MemTotal"))
    except (OSError, KeyError, ValueError):
        return False
    return available < LOW_MEMORY * total


@dataclass(frozen=True)
class PoolKey:
    """What makes two sandboxes interchangeable before their claim."""

    tier: str
    template: str
    #: The template's image version (its creation time): a rebuilt template is another pool.
    version: str
    resources: Resources


class WarmPool:
    """Ready sandboxes per :class:`PoolKey`."""

    def __init__(self, engine: "Engine", sizes: dict[str, int]) -> None:
        self._engine = engine
        self._sizes = {tier: n for tier, n in sizes.items() if n > 0}
        self._ceiling_env = int(os.environ.get("STOCKADE_POOL_MAX", "0"))
        self._floor: dict[PoolKey, int] = {}
        self._ready: dict[PoolKey, list[SandboxRecord]] = {}
        self._takes: dict[PoolKey, collections.deque[float]] = {}
        self._boot_seconds: dict[PoolKey, float] = {}  # updated as boots are timed
        self._refills: dict[PoolKey, asyncio.Task[None]] = {}
        self._reviews: dict[PoolKey, asyncio.TimerHandle] = {}

    def key(self, tier: str, template: str, resources: Resources) -> PoolKey | None:
        """The pool for such a sandbox, or None if ``tier`` is not pooled, or ``template`` is
        a build step's layer (a build's sandboxes are its own) or gone meanwhile."""
        if tier not in self._sizes:
            return None
        try:
            image = self._engine.images.get(template)
        except ImageError:
            return None
        if image.hidden:
            return None
        return PoolKey(tier, template, image.created.isoformat(), resources)

    def _ceiling(self, key: PoolKey) -> int:
        floor = self._floor.get(key, 0)
        return max(floor, self._ceiling_env or max(4 * floor, 4))

    def _track(self, key: PoolKey) -> bool:
        """Start keeping a pool for ``key`` (False: too many pools already)."""
        if key in self._takes:
            return True
        if len(self._takes) >= MAX_POOLS + len(self._floor):
            return False
        self._takes[key] = collections.deque()
        self._ready[key] = []
        self._boot_seconds[key] = 0.5
        return True

    def take(self, key: PoolKey | None) -> SandboxRecord | None:
        """A ready sandbox for ``key``, or None; starts a refill either way."""
        if key is None or not self._track(key):
            return None
        ready = self._ready[key]
        record = ready.pop(0) if ready else None
        self._takes[key].append(time.monotonic())
        # Look again once this create has left the window: the pool may shrink then.
        if old := self._reviews.pop(key, None):
            old.cancel()
        self._reviews[key] = asyncio.get_running_loop().call_later(WINDOW + 0.1, self._refill, key)
        self._refill(key)
        return record

    def target(self, key: PoolKey) -> int:
        """How many ready sandboxes ``key``'s pool should hold now."""
        floor = self._floor.get(key, 0)
        takes, now = self._takes[key], time.monotonic()
        while takes and takes[0] < now - WINDOW:
            takes.popleft()
        if memory_low() or (floor == 0 and len(takes) < ON_DEMAND_AFTER):
            return floor
        expected = len(takes) / WINDOW * self._boot_seconds[key]  # creates during one boot
        return min(self._ceiling(key), floor + math.ceil(expected))

    def fill(self) -> None:
        """Start filling the floored pools (default template and limits) in the background."""
        config = self._engine.config
        for tier, size in self._sizes.items():
            key = self.key(tier, config.default_template, config.default_resources)
            if key is None:
                log.warning("no warm %s pool: no template %r", tier, config.default_template)
            else:
                self._floor[key] = size
                self._track(key)
                self._refill(key)

    def _refill(self, key: PoolKey) -> None:
        if key in self._takes and (key not in self._refills or self._refills[key].done()):
            self._refills[key] = asyncio.get_running_loop().create_task(self._top_up(key))

    async def _top_up(self, key: PoolKey) -> None:
        engine = self._engine
        ready = self._ready[key]
        while len(ready) != (target := self.target(key)):
            if len(ready) > target:  # demand fell: the longest-waiting one goes
                with contextlib.suppress(Exception):
                    await engine.drivers[key.tier].destroy(ready.pop(0).spec)
                continue
            record = engine.new_record(key.tier, key.template, key.resources)
            record.state = "pooled"
            started = time.monotonic()
            try:
                await engine.boot(record)
            except Exception as exc:  # noqa: BLE001 - a pool failure must not break creates
                log.warning("could not start a warm %s sandbox: %s", key.tier, exc)
                return
            seconds = time.monotonic() - started
            self._boot_seconds[key] = 0.7 * self._boot_seconds[key] + 0.3 * seconds
            ready.append(record)
        if not ready and key not in self._floor and not self._takes[key]:
            self._forget(key)  # nobody asked for it in a window: room for another pool

    def _forget(self, key: PoolKey) -> None:
        self._takes.pop(key, None)
        self._ready.pop(key, None)
        self._boot_seconds.pop(key, None)
        self._refills.pop(key, None)
        if review := self._reviews.pop(key, None):
            review.cancel()

    async def forget_template(self, template: str) -> None:
        """Remove the ready sandboxes of ``template`` (before the template goes)."""
        for key in [k for k in self._ready if k.template == template]:
            if (task := self._refills.get(key)) is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for record in self._ready.get(key, []):
                with contextlib.suppress(Exception):
                    await self._engine.drivers[key.tier].destroy(record.spec)
            self._floor.pop(key, None)
            self._forget(key)

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
        for key, records in self._ready.items():
            for record in records:
                with contextlib.suppress(Exception):
                    await self._engine.drivers[key.tier].destroy(record.spec)
            records.clear()

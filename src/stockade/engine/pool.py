"""Warm pools: started sandboxes with the default template and limits, kept ready per tier.

A create that asks for the defaults claims one (its lifetime, envs and metadata are set at
claim time) instead of waiting for a disk, an overlay, the runtime and the agent; a background
task refills the pool. Unclaimed sandboxes are invisible to callers and removed when the engine
closes (or, after a crash, by the next engine's recovery, since their state is "pooled").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from .records import SandboxRecord

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("stockade.engine")


class WarmPool:
    """Ready sandboxes per tier."""

    def __init__(self, engine: "Engine", sizes: dict[str, int]) -> None:
        self._engine = engine
        self._sizes = {tier: n for tier, n in sizes.items() if n > 0}
        self._ready: dict[str, list[SandboxRecord]] = {tier: [] for tier in self._sizes}
        self._refills: dict[str, asyncio.Task[None]] = {}

    def take(self, tier: str) -> SandboxRecord | None:
        """A ready sandbox of ``tier``, or None; starts a refill either way."""
        ready = self._ready.get(tier)
        record = ready.pop(0) if ready else None
        self._refill(tier)
        return record

    def fill(self) -> None:
        """Start filling every tier's pool in the background."""
        for tier in self._sizes:
            self._refill(tier)

    def _refill(self, tier: str) -> None:
        if tier in self._sizes and (tier not in self._refills or self._refills[tier].done()):
            self._refills[tier] = asyncio.get_running_loop().create_task(self._top_up(tier))

    async def _top_up(self, tier: str) -> None:
        engine = self._engine
        defaults = engine.config.default_resources
        while len(self._ready[tier]) < self._sizes[tier]:
            record = engine.new_record(tier, engine.config.default_template, defaults)
            record.state = "pooled"
            try:
                await engine.boot(record)
            except Exception as exc:  # noqa: BLE001 - a pool failure must not break creates
                log.warning("could not start a warm %s sandbox: %s", tier, exc)
                return
            self._ready[tier].append(record)

    async def drain(self) -> None:
        """Stop refilling and remove every unclaimed sandbox."""
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

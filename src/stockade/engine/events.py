"""Lifecycle events: every change of a sandbox's state, with its reason, for ``GET /events``.

The engine publishes a :class:`~stockade.models.SandboxEvent` (with the tenant owning the
sandbox) on each create, pause, resume, stop, start, archive and end, and when the kernel kills
or refuses a process of a sandbox that lives on. Subscribers get the events published after they
subscribed, plus, on request, the kept ones after a sequence number (a reconnecting client says
where it stopped). Memory is bounded: the last :data:`KEEP` events, and a subscriber that does
not keep up loses its oldest unread events rather than slowing the engine (docs/persistence.md).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Callable, Literal

from ..models import SandboxEvent

#: Events kept for replay, and unread events held per subscriber.
KEEP = 1000
QUEUE = 1000


class Events:
    """The event hub of one engine."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._kept: deque[tuple[str | None, SandboxEvent]] = deque(maxlen=KEEP)
        self._queues: set[asyncio.Queue[tuple[str | None, SandboxEvent] | None]] = set()

    def publish(
        self,
        owner: str | None,
        sandbox_id: str,
        state: str,
        reason: str | None = None,
        message: str | None = None,
        kind: Literal["state", "process"] = "state",
    ) -> SandboxEvent:
        """Record one event of a sandbox ``owner`` owns and hand it to every subscriber."""
        event = SandboxEvent(
            seq=next(self._seq),
            time=time.time(),
            sandbox_id=sandbox_id,
            kind=kind,
            state=state,
            reason=reason,
            message=message,
        )
        item = (owner, event)
        self._kept.append(item)
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(item)
        return event

    def close(self) -> None:
        """End every subscription (the engine is closing)."""
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)

    async def follow(
        self, visible: Callable[[str | None], bool], since: int | None = None
    ) -> AsyncIterator[SandboxEvent]:
        """The events ``visible`` lets through (it is given each event's owner): the kept ones
        after ``since`` first (if given), then new ones as they come, until cancelled."""
        queue: asyncio.Queue[tuple[str | None, SandboxEvent] | None] = asyncio.Queue(QUEUE)
        self._queues.add(queue)
        try:
            last = 0
            if since is not None:
                for owner, event in list(self._kept):
                    if event.seq > since and visible(owner):
                        last = event.seq
                        yield event
            while (item := await queue.get()) is not None:
                owner, event = item
                if event.seq > last and visible(owner):
                    yield event
        finally:
            self._queues.discard(queue)

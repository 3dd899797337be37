"""Lifecycle events of your sandboxes, as Server-Sent Events (``GET /events``).

Each event is one ``SandboxEvent`` (docs/persistence.md, "Events"): ``id:`` is its sequence
number, ``event:`` is ``sandbox``, ``data:`` its JSON. A tenant's key sees its own sandboxes'
events only (the admin key sees all); a client that reconnects with ``Last-Event-ID`` (or
``?since=``) first gets the kept events after that number. A comment line every
:data:`KEEPALIVE` seconds keeps idle connections open through proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from ...engine import InvalidRequest
from ..deps import EngineDep, PrincipalDep

router = APIRouter(tags=["events"])
KEEPALIVE = 15.0


@router.get(
    "/events", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}}
)
async def events(
    eng: EngineDep,
    who: PrincipalDep,
    since: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Lifecycle changes of your sandboxes, with their reasons, as they happen."""
    if since is None and last_event_id is not None:
        if not last_event_id.isdigit():
            raise InvalidRequest("Last-Event-ID must be the number of the last event received")
        since = int(last_event_id)
    followed = eng.sandboxes.follow_events(who.may_see, since)
    return StreamingResponse(
        _sse(followed),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _sse(followed: AsyncIterator[object]) -> AsyncIterator[bytes]:
    yield b": stockade events\n\n"  # headers and a first line now: the client knows it is on
    iterator = followed.__aiter__()
    pending: asyncio.Task[object] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:  # the engine is closing
                return
            pending = None
            data = event.model_dump_json()  # type: ignore[attr-defined]
            yield f"id: {event.seq}\nevent: sandbox\ndata: {data}\n\n".encode()  # type: ignore[attr-defined]
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        with contextlib.suppress(BaseException):
            await iterator.aclose()  # type: ignore[attr-defined]

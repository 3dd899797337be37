"""Process events as NDJSON: one JSON object a line, bytes in base64, errors as a last line."""

from __future__ import annotations

import base64
import json
from typing import Any, AsyncIterator

from fastapi.responses import StreamingResponse

from ..engine import EngineError, ProcessRun

NDJSON = "application/x-ndjson"


def _line(event: dict[str, Any]) -> bytes:
    if isinstance(event.get("data"), bytes):
        event = {**event, "data": base64.b64encode(event["data"]).decode()}
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


async def stream_events(events: AsyncIterator[dict[str, Any]], failure: str = "error") -> StreamingResponse:
    """Wait for the first event (so start errors become HTTP errors), then stream the rest.

    If the engine fails mid-stream, the last line is ``{"type": failure, "code", "message"}``."""
    first = await anext(events)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield _line(first)
            async for event in events:
                yield _line(event)
        except EngineError as exc:
            yield _line({"type": failure, "code": exc.code, "message": exc.message})
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(body(), media_type=NDJSON)


async def stream_process(run: ProcessRun) -> StreamingResponse:
    """A process's events as NDJSON (see :func:`stream_events`)."""
    return await stream_events(run.events())

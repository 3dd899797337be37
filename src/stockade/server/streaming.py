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


async def stream_process(run: ProcessRun) -> StreamingResponse:
    """Wait for the first event (so start errors become HTTP errors), then stream the rest."""
    events = run.events()
    first = await anext(events)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield _line(first)
            async for event in events:
                yield _line(event)
        except EngineError as exc:
            yield _line({"type": "error", "code": exc.code, "message": exc.message})
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type=NDJSON)

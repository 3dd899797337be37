"""The E2B code interpreter's routes (its port 49999: ``/execute``, ``/contexts``) onto
Stockade's code contexts (engine/interpreter.py)."""

from __future__ import annotations

import datetime
import json
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ...engine import EngineError
from ...engine.interpreter import CodeContexts
from ...interpreter.charts import MIME as CHART_MIME
from . import gate
from .gate import E2BError

router = APIRouter(prefix="/e2b")
TOKENS = ("envd", "traffic")
#: Stockade MIME types -> the keys of an E2B ``result`` line (others go to ``extra``).
MIME_KEYS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    CHART_MIME: "chart",
}


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Execute(Body):
    code: str = Field(max_length=8 << 20)
    context_id: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, max_length=32)
    env_vars: dict[str, str] | None = None


class NewContext(Body):
    language: str | None = Field(default=None, max_length=32)
    cwd: str | None = Field(default=None, max_length=4096)


def contexts(request: Request, where: gate.Target) -> CodeContexts:
    """The engine's code contexts (the same ones the native API uses)."""
    return where.engine.code


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _line(event: dict[str, Any]) -> list[dict[str, Any]]:
    """A Stockade execution event as E2B's NDJSON lines."""
    kind = event["type"]
    if kind in ("stdout", "stderr"):
        return [{"type": kind, "text": event["text"], "timestamp": _now()}]
    if kind == "result":
        result: dict[str, Any] = {"type": "result", "is_main_result": event["is_main_result"]}
        extra = {}
        for mime, value in event["data"].items():
            if mime in MIME_KEYS:
                result[MIME_KEYS[mime]] = value
            else:
                extra[mime] = value
        if extra:
            result["extra"] = extra
        return [result]
    if kind == "error":
        return [
            {"type": "error", "name": event["name"], "value": event["value"], "traceback": event["traceback"]}
        ]
    if kind == "end":
        lines: list[dict[str, Any]] = [{"type": "end_of_execution"}]
        if event.get("execution_count") is not None:
            lines.insert(0, {"type": "number_of_executions", "execution_count": event["execution_count"]})
        return lines
    return []


async def _ndjson(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            for line in _line(event):
                yield json.dumps(line).encode() + b"\n"
    except EngineError as exc:
        failure = {"type": "error", "name": "StockadeError", "value": exc.message, "traceback": ""}
        yield json.dumps(failure).encode() + b"\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@router.post("/execute")
async def execute(request: Request, body: Execute) -> StreamingResponse:
    """Run a cell; stream stdout, stderr, results, an error and the execution count."""
    where = await gate.target(request, TOKENS)
    if body.context_id and body.language:
        raise E2BError(400, "give context_id or language, not both")
    events = await contexts(request, where).execute(
        where.sandbox_id,
        body.code,
        language=body.language,
        context_id=body.context_id,
        envs=body.env_vars,
    )
    await anext(events)  # "start": from here on, closing the stream releases the context
    return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")


def _context(found: dict[str, Any]) -> dict[str, Any]:
    return {"id": found["id"], "language": found["language"], "cwd": found["cwd"]}


@router.post("/contexts")
async def create_context(request: Request, body: NewContext) -> dict[str, Any]:
    where = await gate.target(request, TOKENS)
    return _context(
        await contexts(request, where).create(where.sandbox_id, body.language, body.cwd or "/home/user")
    )


@router.get("/contexts")
async def list_contexts(request: Request) -> list[dict[str, Any]]:
    where = await gate.target(request, TOKENS)
    return [_context(c) for c in await contexts(request, where).list(where.sandbox_id)]


@router.delete("/contexts/{context_id}", status_code=204)
async def remove_context(request: Request, context_id: str) -> Response:
    where = await gate.target(request, TOKENS)
    await contexts(request, where).remove(where.sandbox_id, context_id)
    return Response(status_code=204)


@router.post("/contexts/{context_id}/restart", status_code=204)
async def restart_context(request: Request, context_id: str) -> Response:
    where = await gate.target(request, TOKENS)
    await contexts(request, where).restart(where.sandbox_id, context_id)
    return Response(status_code=204)

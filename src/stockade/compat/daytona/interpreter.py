"""Toolbox code interpreter (``process/interpreter``): Daytona's stateful Python on Stockade's
code contexts (``engine.code``: a Jupyter kernel, so the sandbox's template needs one, as the
``code-interpreter`` template has).

The WebSocket takes one JSON request ``{code, contextId?, envs?, timeout?}`` and answers
``stdout``/``stderr`` text frames and an ``error`` frame for an uncaught exception, then closes
with 1000, or 4008 when ``timeout`` ran out, or 1008 for a bad request (unknown context).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Response, WebSocket, WebSocketDisconnect
from pydantic import Field, ValidationError

from ...engine import EngineError, NotFound
from ._base import TOOLBOX, ControlDep, DaytonaError, DaytonaRoute, ToolboxSandbox, control
from ._base import owned, principal
from .render import iso
from .wire import Body

router = APIRouter(
    prefix=TOOLBOX + "/{sandboxId}/process/interpreter", route_class=DaytonaRoute, tags=["daytona toolbox"]
)
DEFAULT = "default"


class CreateContext(Body):
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    language: str | None = Field(default=None, pattern=r"^python3?$")


class ExecuteRequest(Body):
    code: str = Field(max_length=1 << 20)
    context_id: str | None = Field(default=None, alias="contextId", max_length=64)
    envs: dict[str, str] | None = Field(default=None, max_length=256)
    timeout: int | None = Field(default=None, ge=0, le=86400)


def _context(found: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": DEFAULT if found.get("default") else found["id"],
        "cwd": found["cwd"],
        "language": "python",
        "active": True,
        "createdAt": iso(time.time()),
    }


@router.post("/context")
async def create_context(body: CreateContext, sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, Any]:
    """A new interpreter with its own variables (its kernel started before this answers)."""
    return _context(await ctl.engine.code.create(sandbox, "python", body.cwd))


@router.get("/context")
async def list_contexts(sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, Any]:
    return {
        "contexts": [_context(c) for c in await ctl.engine.code.list(sandbox) if c["language"] == "python"]
    }


@router.delete("/context/{contextId}")
async def delete_context(
    contextId: str,
    sandbox: ToolboxSandbox,  # noqa: N803
    ctl: ControlDep,
) -> Response:
    if contextId == DEFAULT:
        raise DaytonaError(400, "the default context cannot be deleted")
    try:
        await ctl.engine.code.remove(sandbox, contextId)
    except NotFound:
        raise DaytonaError(404, f"context not found: {contextId}") from None
    return Response(
        json.dumps({"message": f"context {contextId} deleted"}), 200, media_type="application/json"
    )


@router.websocket("/execute")
async def execute(websocket: WebSocket, sandboxId: str) -> None:  # noqa: N803
    """Run one piece of code, streaming its output."""
    try:
        ctl = await control(websocket)
        owned(ctl, await principal(websocket, ctl), sandboxId)
    except DaytonaError as exc:
        await websocket.close(code=1008, reason=exc.message[:120])
        return
    await websocket.accept()
    try:
        request = ExecuteRequest.model_validate_json(await websocket.receive_text())
    except (ValidationError, KeyError, WebSocketDisconnect) as exc:
        await websocket.close(1008, f"invalid request: {str(exc)[:100]}")
        return
    context = None if request.context_id in (None, DEFAULT) else request.context_id
    try:
        events = await ctl.engine.code.execute(
            sandboxId, request.code, language="python", context_id=context, timeout=request.timeout or None
        )
    except NotFound:
        await websocket.close(1008, f"context not found: {request.context_id}")
        return
    except EngineError as exc:
        await websocket.close(1011, exc.message[:120])
        return
    status = "ok"
    try:
        async for event in events:
            if event["type"] in ("stdout", "stderr"):
                await websocket.send_text(json.dumps({"type": event["type"], "text": event["text"]}))
            elif event["type"] == "error":
                await websocket.send_text(
                    json.dumps({k: event[k] for k in ("type", "name", "value", "traceback")})
                )
            elif event["type"] == "end":
                status = event["status"]
        await websocket.close(
            4008 if status == "timeout" else 1000, "execution timed out" if status == "timeout" else ""
        )
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away: the engine interrupts the cell
    finally:
        await events.aclose()  # type: ignore[attr-defined]

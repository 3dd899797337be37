"""Interactive terminals over WebSocket: ``/sandboxes/{id}/pty``.

Query: ``cols``, ``rows``, and optionally ``cmd`` (default: a login bash, else sh), ``user``,
``cwd`` and ``env`` (``KEY=VALUE``, repeated). Once accepted, the server sends a text frame
``{"type": "start", "pid"}``, then the terminal's output as binary frames, and at the end a text
frame ``{"type": "end", "exit_code", "status", ...}`` before closing (1000). The client sends
keystrokes as binary frames and control messages as text frames: ``{"type": "resize", "cols",
"rows"}`` or ``{"type": "signal", "signal": "INT"}``. A failure to start is a text frame
``{"type": "error", "status", "code", "message"}`` and a close with code 4000 + status. Closing
the WebSocket kills the terminal's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket

from ...engine import Engine, EngineError, InvalidRequest, ProcessRun
from ...models import ProcessSelector, ProcessSpec, PtySize

router = APIRouter(tags=["pty"])
DEFAULT_SHELL = "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi"
#: A terminal is not killed for its output (the credit window bounds the host's memory).
MAX_OUTPUT = 1 << 50


@router.websocket("/sandboxes/{sandbox_id}/pty")
async def pty(
    websocket: WebSocket,
    sandbox_id: str,
    cols: Annotated[int, Query(ge=1, le=1000)] = 80,
    rows: Annotated[int, Query(ge=1, le=1000)] = 24,
    cmd: Annotated[str | None, Query(min_length=1, max_length=65536)] = None,
    user: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    cwd: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
    env: Annotated[list[str], Query(max_length=256)] = [],
) -> None:  # noqa: B006
    """An interactive terminal running ``cmd`` in the sandbox."""
    eng: Engine = websocket.app.state.engine
    await websocket.accept()
    try:
        spec = ProcessSpec(
            cmd=cmd or DEFAULT_SHELL,
            pty=PtySize(cols=cols, rows=rows),
            user=user,
            cwd=cwd,
            env=_env(env),
            max_output=MAX_OUTPUT,
        )
        run = await eng.processes.start(sandbox_id, spec)
        events = run.events()
        start = await anext(events)
    except EngineError as exc:
        await websocket.send_text(
            json.dumps({"type": "error", "status": exc.status, "code": exc.code, "message": exc.message})
        )
        await websocket.close(4000 + exc.status, exc.message[:120])
        return
    await websocket.send_text(json.dumps({"type": "start", "pid": start.get("pid")}))
    output = asyncio.create_task(_output(websocket, events))
    try:
        await _input(websocket, eng, sandbox_id, run, output)
    finally:
        if not output.done():
            with contextlib.suppress(EngineError):
                await eng.processes.signal(sandbox_id, ProcessSelector(pid=run.pid), "KILL")
            output.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await output


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"env {pair!r} must look like KEY=VALUE")
        env[key] = value
    return env


async def _output(websocket: WebSocket, events: Any) -> None:
    """The terminal's output, then its end, then close."""
    async for event in events:
        if event["type"] == "pty":
            await websocket.send_bytes(event["data"])
        elif event["type"] == "end":
            await websocket.send_text(json.dumps(event))
    await websocket.close(1000)


async def _input(
    websocket: WebSocket, eng: Engine, sandbox_id: str, run: ProcessRun, output: asyncio.Task[None]
) -> None:
    """Keystrokes and control messages from the client, until either side is done."""
    while True:
        receive = asyncio.ensure_future(websocket.receive())
        await asyncio.wait({receive, output}, return_when=asyncio.FIRST_COMPLETED)
        if not receive.done():
            receive.cancel()
            return
        message = receive.result()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes"):
            await run.send_stdin(message["bytes"])
        elif message.get("text"):
            await _control(eng, sandbox_id, run, message["text"])


async def _control(eng: Engine, sandbox_id: str, run: ProcessRun, text: str) -> None:
    try:
        body = json.loads(text)
        kind = body["type"]
        selector = ProcessSelector(pid=run.pid)
        if kind == "resize":
            await eng.processes.resize(sandbox_id, selector, int(body["cols"]), int(body["rows"]))
        elif kind == "signal":
            await eng.processes.signal(sandbox_id, selector, str(body["signal"]))
    except (ValueError, KeyError, TypeError, EngineError):
        pass  # a bad control message must not end the terminal

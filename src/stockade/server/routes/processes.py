"""Processes in a sandbox: start (streamed), connect, list, stdin, signal, resize."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from ...engine import InvalidRequest
from ...models import ProcessInfo
from ..deps import EngineDep
from ..models import ProcessSelector, ProcessSpec, Resize, Signal
from ..streaming import NDJSON, stream_process

router = APIRouter(prefix="/sandboxes/{sandbox_id}/processes", tags=["processes"])
MAX_STDIN_CHUNK = 8 << 20


@router.post(
    "",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": "process events"}},
)
async def start_process(sandbox_id: str, body: ProcessSpec, eng: EngineDep) -> StreamingResponse:
    """Start a process and stream its events: start, stdout, stderr, pty, keepalive, end."""
    return await stream_process(await eng.processes.start(sandbox_id, body))


@router.post(
    "/connect",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": "process events"}},
)
async def connect_process(sandbox_id: str, body: ProcessSelector, eng: EngineDep) -> StreamingResponse:
    """Follow a running process's output from now on."""
    return await stream_process(await eng.processes.connect(sandbox_id, body))


@router.get("", response_model=list[ProcessInfo])
async def list_processes(sandbox_id: str, eng: EngineDep) -> list[ProcessInfo]:
    return await eng.processes.list(sandbox_id)


@router.post("/stdin", status_code=204)
async def send_stdin(
    sandbox_id: str,
    request: Request,
    eng: EngineDep,
    pid: Annotated[int | None, Query(ge=1)] = None,
    tag: Annotated[str | None, Query(min_length=1)] = None,
) -> None:
    """Write the request body to the process's standard input."""
    selector = ProcessSelector(pid=pid, tag=tag)
    data = await request.body()
    if len(data) > MAX_STDIN_CHUNK:
        raise InvalidRequest(f"send stdin in chunks of at most {MAX_STDIN_CHUNK} bytes")
    await eng.processes.send_stdin(sandbox_id, selector, data)


@router.post("/stdin/close", status_code=204)
async def close_stdin(sandbox_id: str, body: ProcessSelector, eng: EngineDep) -> None:
    await eng.processes.close_stdin(sandbox_id, body)


@router.post("/signal", status_code=204)
async def signal_process(sandbox_id: str, body: Signal, eng: EngineDep) -> None:
    await eng.processes.signal(sandbox_id, body, body.signal)


@router.post("/resize", status_code=204)
async def resize_pty(sandbox_id: str, body: Resize, eng: EngineDep) -> None:
    await eng.processes.resize(sandbox_id, body, body.cols, body.rows)

"""Processes in a sandbox: start (streamed), connect, list, stdin, signal, resize."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from ...engine import Engine
from ..deps import engine
from ..models import ProcessSelector, Resize, Signal, StartProcess
from ..streaming import NDJSON, stream_process

router = APIRouter(prefix="/sandboxes/{sandbox_id}/processes", tags=["processes"])
EngineDep = Annotated[Engine, Depends(engine)]
MAX_STDIN_CHUNK = 8 << 20


@router.post("", response_class=StreamingResponse,
             responses={200: {"content": {NDJSON: {}}, "description": "process events"}})
async def start_process(sandbox_id: str, body: StartProcess, eng: EngineDep) -> StreamingResponse:
    """Start a process and stream its events: start, stdout, stderr, pty, keepalive, end."""
    run = await eng.start_process(sandbox_id, body.agent_params())
    return await stream_process(run)


@router.post("/connect", response_class=StreamingResponse,
             responses={200: {"content": {NDJSON: {}}, "description": "process events"}})
async def connect_process(sandbox_id: str, body: ProcessSelector,
                          eng: EngineDep) -> StreamingResponse:
    """Follow a running process's output from now on."""
    run = await eng.connect_process(sandbox_id, body.agent_params())
    return await stream_process(run)


@router.get("")
async def list_processes(sandbox_id: str, eng: EngineDep) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await eng.call(sandbox_id, "process.list", {})
    return result


@router.post("/stdin", status_code=204)
async def send_stdin(sandbox_id: str, request: Request, eng: EngineDep,
                     pid: Annotated[int | None, Query(ge=1)] = None,
                     tag: Annotated[str | None, Query(min_length=1)] = None) -> None:
    """Write the request body to the process's standard input."""
    selector = ProcessSelector(pid=pid, tag=tag).agent_params()
    data = await request.body()
    if len(data) > MAX_STDIN_CHUNK:
        raise ValueError(f"send stdin in chunks of at most {MAX_STDIN_CHUNK} bytes")
    await eng.send_stdin(sandbox_id, selector, data)


@router.post("/stdin/close", status_code=204)
async def close_stdin(sandbox_id: str, body: ProcessSelector, eng: EngineDep) -> None:
    await eng.call(sandbox_id, "process.close_stdin", body.agent_params())


@router.post("/signal", status_code=204)
async def signal_process(sandbox_id: str, body: Signal, eng: EngineDep) -> None:
    await eng.call(sandbox_id, "process.signal", body.model_dump(exclude_none=True))


@router.post("/resize", status_code=204)
async def resize_pty(sandbox_id: str, body: Resize, eng: EngineDep) -> None:
    await eng.call(sandbox_id, "process.resize", body.model_dump(exclude_none=True))

"""envd's ``process.Process`` service over Connect, onto the engine's processes."""

from __future__ import annotations

from typing import Any, AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, model_validator

from ...models import ProcessSelector, ProcessSpec, PtySize
from ...engine import EngineError
from . import gate
from .connect import ConnectError, Message, b64, stream_request, stream_response, unary_request
from .connect import END_STREAM, STREAM_TYPE, envelope, stream_messages, unb64

router = APIRouter(prefix="/e2b/process.Process")
SIGNALS = {"SIGNAL_SIGTERM": "TERM", "SIGNAL_SIGKILL": "KILL", 15: "TERM", 9: "KILL"}


class ProcessConfig(Message):
    cmd: str = Field(min_length=1, max_length=1 << 20)
    args: list[str] = Field(default_factory=list, max_length=4096)
    envs: dict[str, str] = Field(default_factory=dict, max_length=1024)
    cwd: str | None = Field(default=None, max_length=4096)


class Size(Message):
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


class Pty(Message):
    size: Size


class StartRequest(Message):
    process: ProcessConfig
    pty: Pty | None = None
    tag: str | None = Field(default=None, max_length=256)
    stdin: bool | None = None

    def spec(self, user: str | None) -> ProcessSpec:
        size = self.pty.size if self.pty else None
        return ProcessSpec(
            argv=[self.process.cmd, *self.process.args],
            env=self.process.envs,
            cwd=self.process.cwd or None,
            user=user,
            tag=self.tag or None,
            stdin=bool(self.stdin),
            pty=PtySize(cols=size.cols, rows=size.rows) if size else None,
        )


class Selector(Message):
    pid: int | None = Field(default=None, ge=1)
    tag: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def one(self) -> "Selector":
        if (self.pid is None) == (self.tag is None):
            raise ValueError("select the process by exactly one of pid or tag")
        return self

    def selector(self) -> ProcessSelector:
        return ProcessSelector(pid=self.pid, tag=self.tag)


class Selected(Message):
    process: Selector


class Input(Message):
    stdin: str | None = None
    pty: str | None = None


class SendInputRequest(Selected):
    input: Input


class SendSignalRequest(Selected):
    signal: str | int


class UpdateRequest(Selected):
    pty: Pty | None = None


def _event(event: dict[str, Any]) -> dict[str, Any] | None:
    """An engine process event as a ``ProcessEvent`` (None: nothing to send)."""
    kind = event.get("type")
    if kind == "start":
        return {"start": {"pid": event["pid"]}}
    if kind in ("stdout", "stderr", "pty"):
        return {"data": {kind: b64(event["data"])}}
    if kind == "keepalive":
        return {"keepalive": {}}
    if kind == "end":
        code = event.get("exit_code")
        end: dict[str, Any] = {
            "exitCode": code if code is not None else -1,
            "exited": event.get("status") == "exited",
            "status": _status(event),
        }
        if event.get("status") not in ("exited", "signaled"):
            end["error"] = event.get("status", "ended")
        return {"end": end}
    return None


def _status(event: dict[str, Any]) -> str:
    if event.get("status") == "signaled" and event.get("signal"):
        return f"signal: {event['signal']}"
    return f"exit status {event.get('exit_code')}"


async def _follow(run: Any) -> AsyncIterator[dict[str, Any]]:
    async for event in run.events():
        if (rendered := _event(event)) is not None:
            yield {"event": rendered}


@router.post("/Start")
async def start(request: Request) -> StreamingResponse:
    """Start a process; stream ``start`` (pid), data, keepalives, then ``end``."""
    where = await gate.target(request)
    body = await stream_request(request, StartRequest)
    run = await where.engine.processes.start(where.sandbox_id, body.spec(gate.rpc_user(request)))
    return stream_response(_follow(run))


@router.post("/Connect")
async def connect(request: Request) -> StreamingResponse:
    """Follow a running process: ``start`` with its pid, then its output from now on."""
    where = await gate.target(request)
    body = await stream_request(request, Selected)
    run = await where.engine.processes.connect(where.sandbox_id, body.process.selector())
    return stream_response(_follow(run))


@router.post("/List")
async def list_processes(request: Request) -> JSONResponse:
    where = await gate.target(request)
    await unary_request(request, Message)
    found = await where.engine.processes.list(where.sandbox_id)
    return JSONResponse(
        {
            "processes": [
                {
                    "config": {"cmd": p.cmd or "", "args": [], "envs": {}},
                    "pid": p.pid,
                    **({"tag": p.tag} if p.tag else {}),
                }
                for p in found
            ]
        }
    )


@router.post("/SendInput")
async def send_input(request: Request) -> JSONResponse:
    where = await gate.target(request)
    body = await unary_request(request, SendInputRequest)
    raw = body.input.stdin if body.input.stdin is not None else body.input.pty
    if raw is None:
        raise ConnectError("invalid_argument", "input must hold stdin or pty bytes")
    await where.engine.processes.send_stdin(where.sandbox_id, body.process.selector(), unb64(raw, "input"))
    return JSONResponse({})


@router.post("/SendSignal")
async def send_signal(request: Request) -> JSONResponse:
    where = await gate.target(request)
    body = await unary_request(request, SendSignalRequest)
    name = SIGNALS.get(body.signal)
    if name is None:
        raise ConnectError(
            "invalid_argument", f"signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL, not {body.signal!r}"
        )
    await where.engine.processes.signal(where.sandbox_id, body.process.selector(), name)
    return JSONResponse({})


@router.post("/CloseStdin")
async def close_stdin(request: Request) -> JSONResponse:
    where = await gate.target(request)
    body = await unary_request(request, Selected)
    await where.engine.processes.close_stdin(where.sandbox_id, body.process.selector())
    return JSONResponse({})


@router.post("/Update")
async def update(request: Request) -> JSONResponse:
    """Resize the process's terminal."""
    where = await gate.target(request)
    body = await unary_request(request, UpdateRequest)
    if body.pty is not None:
        await where.engine.processes.resize(
            where.sandbox_id, body.process.selector(), body.pty.size.cols, body.pty.size.rows
        )
    return JSONResponse({})


class InputData(Message):
    input: Input


class StreamInputRequest(Message):
    """One message of StreamInput: ``start`` first, then ``data`` or ``keepalive``."""

    start: Selected | None = None
    data: InputData | None = None


@router.post("/StreamInput")
async def stream_input(request: Request) -> Response:
    """Client stream: ``{start: {process}}``, then ``{data: {input}}`` chunks written to the
    process's stdin as they arrive; answered, once the client ends, with one empty message
    (or the error in the end-of-stream envelope)."""
    where = await gate.target(request)
    selector: ProcessSelector | None = None
    try:
        async for message in stream_messages(request, StreamInputRequest):
            if message.start is not None:
                selector = message.start.process.selector()
            elif message.data is not None:
                if selector is None:
                    raise ConnectError("invalid_argument", "the first message must be start")
                raw = message.data.input.stdin or message.data.input.pty or ""
                await where.engine.processes.send_stdin(where.sandbox_id, selector, unb64(raw, "input"))
    except (ConnectError, EngineError) as exc:
        error = exc if isinstance(exc, ConnectError) else ConnectError.of(exc)
        return Response(envelope({"error": error.body()}, END_STREAM), media_type=STREAM_TYPE)
    return Response(envelope({}) + envelope({}, END_STREAM), media_type=STREAM_TYPE)

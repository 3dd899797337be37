"""Toolbox sessions: named long-lived shells (Daytona's ``process/session``) on Stockade
processes.

A session is one ``bash`` process started with stdin open and tagged ``daytona-session-<id>``.
Each command is written to a script file and sourced by that shell (so ``cd``, ``export`` and
functions carry over), with its stdout and stderr going to files beside it and its exit status
reported on the shell's own stdout. Sessions live as long as the shell; they are not kept
across a server restart or a sandbox stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Path, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.requests import HTTPConnection

from ...engine import Engine, EngineError
from ...models import ProcessSelector, ProcessSpec
from ._base import TOOLBOX, ControlDep, DaytonaError, DaytonaRoute, ToolboxSandbox, control
from ._base import owned, principal
from .wire import Body

router = APIRouter(prefix=TOOLBOX + "/{sandboxId}/process/session", route_class=DaytonaRoute,
                   tags=["daytona toolbox"])
SessionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
DIRECTORY = "/tmp/.daytona-sessions"
SHELL = "if [ -x /bin/bash ]; then exec /bin/bash --noprofile --norc -s; fi; exec /bin/sh -s"
DONE = b"\x1eDAYTONA-DONE "
MAX_COMMANDS = 10000


@dataclass
class Command:
    id: str
    command: str
    exit_code: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "command": self.command}
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        return out


@dataclass
class Session:
    """One shell and the commands sent to it, in order."""

    id: str
    sandbox: str
    process: Any
    commands: dict[str, Command] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reader: "asyncio.Task[None] | None" = None
    ended: bool = False

    @property
    def directory(self) -> str:
        return f"{DIRECTORY}/{self.id}"

    def public(self) -> dict[str, Any]:
        return {"sessionId": self.id, "commands": [c.public() for c in self.commands.values()]}

    async def read(self) -> None:
        """Follow the shell's stdout for completion lines until the shell ends."""
        buffer = b""
        try:
            async for event in self.process.events():
                if event["type"] != "stdout":
                    continue
                buffer += event["data"]
                while (start := buffer.find(DONE)) >= 0 and (end := buffer.find(b"\n", start)) > 0:
                    self._finish(buffer[start + len(DONE):end].decode(errors="replace"))
                    buffer = buffer[end + 1:]
                buffer = buffer[-4096:]
        except (EngineError, OSError):
            pass
        finally:
            self.ended = True
            for command in self.commands.values():
                if command.exit_code is None:
                    command.exit_code = -1
                command.done.set()

    def _finish(self, line: str) -> None:
        command_id, _, code = line.partition(" ")
        command = self.commands.get(command_id)
        if command is not None and code.strip().lstrip("-").isdigit():
            command.exit_code = int(code)
            command.done.set()


class Sessions:
    """Every session of this server, by sandbox and session id."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Session] = {}

    def get(self, sandbox: str, session_id: str) -> Session:
        found = self.items.get((sandbox, session_id))
        if found is None or found.ended:
            raise DaytonaError(404, f"session {session_id} not found (or its shell has ended)")
        return found

    def start(self, session: Session) -> None:
        """Follow the session's shell; forget the session once the shell has ended."""
        key = (session.sandbox, session.id)
        self.items[key] = session
        session.reader = asyncio.get_running_loop().create_task(session.read())

        def forget(_: "asyncio.Task[None]") -> None:
            if self.items.get(key) is session:
                del self.items[key]

        session.reader.add_done_callback(forget)

    def of(self, sandbox: str) -> list[Session]:
        return [s for (sb, _), s in self.items.items() if sb == sandbox and not s.ended]


def sessions(request: HTTPConnection) -> Sessions:
    state = request.app.state
    if getattr(state, "daytona_sessions", None) is None:
        state.daytona_sessions = Sessions()
    found: Sessions = state.daytona_sessions
    return found


def _tag(sandbox: str, session_id: str) -> str:
    return f"daytona-session-{sandbox}-{session_id}"


class CreateSession(Body):
    session_id: str = Field(alias="sessionId", pattern=r"^[A-Za-z0-9._-]{1,64}$")


class ExecuteRequest(Body):
    command: str = Field(min_length=1, max_length=1 << 20)
    run_async: bool | None = Field(default=None, alias="runAsync")
    async_: bool | None = Field(default=None, alias="async")


@router.post("", status_code=201)
async def create_session(body: CreateSession, sandbox: ToolboxSandbox, ctl: ControlDep,
                         request: Request) -> Response:
    """Start the session's shell (409 if the name is taken)."""
    store = sessions(request)
    key = (sandbox, body.session_id)
    if body.session_id == "entrypoint" or (key in store.items and not store.items[key].ended):
        raise DaytonaError(409, f"session {body.session_id} already exists")
    process = await ctl.engine.processes.start(sandbox, ProcessSpec(
        argv=["/bin/sh", "-c", SHELL], stdin=True, tag=_tag(sandbox, body.session_id)))
    store.start(Session(body.session_id, sandbox, process))
    return Response(status_code=201)


@router.get("")
async def list_sessions(sandbox: ToolboxSandbox, request: Request) -> list[dict[str, Any]]:
    return [s.public() for s in sessions(request).of(sandbox)]


@router.get("/{sessionId}")
async def get_session(sessionId: SessionId, sandbox: ToolboxSandbox,  # noqa: N803
                      request: Request) -> dict[str, Any]:
    return sessions(request).get(sandbox, sessionId).public()


@router.delete("/{sessionId}", status_code=204)
async def delete_session(sessionId: SessionId, sandbox: ToolboxSandbox, ctl: ControlDep,  # noqa: N803
                         request: Request) -> Response:
    """Kill the session's shell and whatever it runs."""
    store = sessions(request)
    session = store.get(sandbox, sessionId)
    with contextlib.suppress(EngineError):
        await ctl.engine.processes.signal(sandbox, ProcessSelector(tag=_tag(sandbox, sessionId)),
                                          "KILL")
    store.items.pop((sandbox, sessionId), None)
    if session.reader is not None:
        session.reader.cancel()
    return Response(status_code=204)


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read(eng: Engine, sandbox: str, path: str) -> bytes:
    try:
        chunks = await eng.files.read(sandbox, path)
        return b"".join([c async for c in chunks])
    except EngineError:
        return b""


async def _logs(eng: Engine, session: Session, command_id: str) -> dict[str, str]:
    out = await _read(eng, session.sandbox, f"{session.directory}/{command_id}.out")
    err = await _read(eng, session.sandbox, f"{session.directory}/{command_id}.err")
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    return {"output": stdout + stderr, "stdout": stdout, "stderr": stderr}


@router.post("/{sessionId}/exec")
async def execute(sessionId: SessionId, body: ExecuteRequest, sandbox: ToolboxSandbox,  # noqa: N803
                  ctl: ControlDep, request: Request) -> Any:
    """Run a command in the session's shell: 200 with its output once it ends, or at once 202
    with its id (``runAsync``)."""
    session = sessions(request).get(sandbox, sessionId)
    if len(session.commands) >= MAX_COMMANDS:
        raise DaytonaError(409, f"session {sessionId} ran {MAX_COMMANDS} commands; start a "
                                f"new one")
    command = Command(secrets.token_hex(8), body.command)
    script = f"{session.directory}/{command.id}"
    async with session.lock:
        await ctl.engine.files.write(sandbox, script + ".sh", _bytes(body.command.encode()))
        session.commands[command.id] = command
        line = (f'{{ . "{script}.sh"; }} >"{script}.out" 2>"{script}.err" </dev/null; '
                f"printf '\\036DAYTONA-DONE {command.id} %d\\n' $?\n")
        await session.process.send_stdin(line.encode())
    if body.run_async or body.async_:
        return JSONResponse({"cmdId": command.id}, 202)
    await command.done.wait()
    return {"cmdId": command.id, "exitCode": command.exit_code,
            **await _logs(ctl.engine, session, command.id)}


def _command(request: HTTPConnection, sandbox: str, session_id: str, command_id: str
             ) -> tuple[Session, Command]:
    session = sessions(request).get(sandbox, session_id)
    command = session.commands.get(command_id)
    if command is None:
        raise DaytonaError(404, f"command {command_id} not found in session {session_id}")
    return session, command


@router.get("/{sessionId}/command/{commandId}")
async def get_command(sessionId: SessionId, commandId: str, sandbox: ToolboxSandbox,  # noqa: N803
                      request: Request) -> dict[str, Any]:
    return _command(request, sandbox, sessionId, commandId)[1].public()


@router.get("/{sessionId}/command/{commandId}/logs")
async def command_logs(sessionId: SessionId, commandId: str, sandbox: ToolboxSandbox,  # noqa: N803
                       ctl: ControlDep, request: Request) -> dict[str, str]:
    """What the command wrote so far (``follow`` over WebSocket is not served yet)."""
    session, command = _command(request, sandbox, sessionId, commandId)
    return await _logs(ctl.engine, session, command.id)


#: In-band stream labels of a followed log (the client demultiplexes on them).
LABELS = {"out": b"\x01\x01\x01", "err": b"\x02\x02\x02"}
POLL = 0.2


@router.websocket("/{sessionId}/command/{commandId}/logs")
async def follow_logs(websocket: WebSocket, sandboxId: str, sessionId: str,  # noqa: N803
                      commandId: str) -> None:
    """``?follow=true`` upgraded: the output so far, then as it comes, each piece after its
    stream's label; closed with 1000 once the command has ended and everything was sent."""
    try:
        ctl = await control(websocket)
        owned(ctl, await principal(websocket, ctl), sandboxId)
        session, command = _command(websocket, sandboxId, sessionId, commandId)
    except DaytonaError as exc:
        await websocket.close(code=1008, reason=exc.message[:120])
        return
    await websocket.accept()
    sent = {"out": 0, "err": 0}
    try:
        while True:
            finished = command.done.is_set()
            for kind, label in LABELS.items():
                data = await _read(ctl.engine, sandboxId, f"{session.directory}/{command.id}.{kind}")
                if len(data) > sent[kind]:
                    await websocket.send_bytes(label + data[sent[kind]:])
                    sent[kind] = len(data)
            if finished:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(command.done.wait(), POLL)
        await websocket.close(code=1000)
    except WebSocketDisconnect:
        return

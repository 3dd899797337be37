"""Toolbox sessions: named long-lived shells (Daytona's ``process/session``), kept entirely in
the sandbox, so the front end holds no state and a session survives a server restart.

A session is one ``bash`` process started with stdin open and tagged
``daytona-session-<sandbox>-<id>`` (it exists while that process runs). Each command is written
to ``/tmp/.daytona-sessions/<id>/<cmd>.sh`` and a line sent to the shell sources it (so ``cd``,
``export`` and functions carry over) with its stdout and stderr going to ``<cmd>.out`` and
``<cmd>.err`` and its exit status then written to ``<cmd>.exit``. Its stdin is the FIFO
``<cmd>.in``, opened read-write so the command never waits for a writer (and, as on Daytona,
reading stdin waits for input rather than seeing its end); ``.../input`` writes to it. Command
ids sort in the order the commands were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Annotated, Any, AsyncGenerator, AsyncIterator, cast

from fastapi import APIRouter, Path, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import Field

from ...engine import Engine, EngineError, NotFound
from ...models import WAITING_TAG, ProcessSelector, ProcessSpec
from ._base import TOOLBOX, ControlDep, DaytonaError, DaytonaRoute, ToolboxSandbox, control
from ._base import owned, principal
from .argv import run
from .wire import Body

router = APIRouter(
    prefix=TOOLBOX + "/{sandboxId}/process/session", route_class=DaytonaRoute, tags=["daytona toolbox"]
)
SessionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
CommandId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,64}$")]
DIRECTORY = "/tmp/.daytona-sessions"
SHELL = "if [ -x /bin/bash ]; then exec /bin/bash --noprofile --norc -s; fi; exec /bin/sh -s"
MAX_COMMANDS = 1000
#: Characters one input call may send (an argument of the writer in the sandbox).
MAX_INPUT = 64 << 10
#: Seconds between two looks at a running command's files (growing to the last).
POLL = (0.01, 0.02, 0.05, 0.1, 0.2)


def _tag(sandbox: str, session_id: str) -> str:
    """A waiting shell: it does not keep the sandbox from stopping when idle (as on Daytona,
    where auto-stop counts SDK calls, not processes)."""
    return f"{WAITING_TAG}daytona-session-{sandbox}-{session_id}"


def _directory(session_id: str) -> str:
    return f"{DIRECTORY}/{session_id}"


async def _alive(eng: Engine, sandbox: str) -> list[str]:
    """The ids of the sandbox's sessions whose shell runs."""
    prefix = _tag(sandbox, "")
    return [
        p.tag[len(prefix) :] for p in await eng.processes.list(sandbox) if p.tag and p.tag.startswith(prefix)
    ]


async def _check(eng: Engine, sandbox: str, session_id: str) -> str:
    """The session's directory; 404 unless its shell runs."""
    if session_id not in await _alive(eng, sandbox):
        raise DaytonaError(404, f"session {session_id} not found (or its shell has ended)")
    return _directory(session_id)


async def _read(eng: Engine, sandbox: str, path: str) -> bytes | None:
    """The file's bytes; None when it does not exist."""
    try:
        chunks = await eng.files.read(sandbox, path)
        return b"".join([c async for c in chunks])
    except NotFound:
        return None


async def _exit_code(eng: Engine, sandbox: str, script: str) -> int | None:
    text = (await _read(eng, sandbox, script + ".exit") or b"").strip()
    return int(text) if text.lstrip(b"-").isdigit() else None


async def _command(eng: Engine, sandbox: str, directory: str, command_id: str) -> dict[str, Any]:
    """Daytona's Command: id, text and (once it ended) exit code."""
    script = f"{directory}/{command_id}"
    text = await _read(eng, sandbox, script + ".sh")
    if text is None:
        raise DaytonaError(404, f"command {command_id} not found in this session")
    out: dict[str, Any] = {"id": command_id, "command": text.decode("utf-8", "replace")}
    code = await _exit_code(eng, sandbox, script)
    if code is not None:
        out["exitCode"] = code
    return out


async def _commands(eng: Engine, sandbox: str, directory: str) -> list[str]:
    """The session's command ids, oldest first."""
    entries = await eng.files.list(sandbox, directory)
    return sorted(e.name[:-3] for e in entries if e.name.endswith(".sh"))


async def _session(eng: Engine, sandbox: str, session_id: str) -> dict[str, Any]:
    directory = _directory(session_id)
    ids = await _commands(eng, sandbox, directory)
    commands = await asyncio.gather(*(_command(eng, sandbox, directory, c) for c in ids))
    return {"sessionId": session_id, "commands": list(commands)}


class CreateSession(Body):
    session_id: str = Field(alias="sessionId", pattern=r"^[A-Za-z0-9._-]{1,64}$")


class ExecuteRequest(Body):
    command: str = Field(min_length=1, max_length=1 << 20)
    run_async: bool | None = Field(default=None, alias="runAsync")
    async_: bool | None = Field(default=None, alias="async")


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


@router.post("", status_code=201)
async def create_session(body: CreateSession, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    """Start the session's shell (409 if the name is taken), with an empty directory."""
    eng, session_id = ctl.engine, body.session_id
    if session_id == "entrypoint" or session_id in await _alive(eng, sandbox):
        raise DaytonaError(409, f"session {session_id} already exists")
    with contextlib.suppress(NotFound):  # what an ended session of that name left
        await eng.files.remove(sandbox, _directory(session_id))
    await eng.files.make_dir(sandbox, _directory(session_id))
    run = await eng.processes.start(
        sandbox, ProcessSpec(argv=["/bin/sh", "-c", SHELL], stdin=True, tag=_tag(sandbox, session_id))
    )
    events = cast(AsyncGenerator[dict[str, Any], None], run.events())  # a generator
    try:  # wait until it runs, then detach: the shell goes on without a listener
        async for event in events:
            if event["type"] in ("start", "end"):
                break
    finally:
        await events.aclose()
    return Response(status_code=201)


@router.get("")
async def list_sessions(sandbox: ToolboxSandbox, ctl: ControlDep) -> list[dict[str, Any]]:
    return [await _session(ctl.engine, sandbox, s) for s in await _alive(ctl.engine, sandbox)]


@router.get("/{sessionId}")
async def get_session(
    sessionId: SessionId,
    sandbox: ToolboxSandbox,  # noqa: N803
    ctl: ControlDep,
) -> dict[str, Any]:
    await _check(ctl.engine, sandbox, sessionId)
    return await _session(ctl.engine, sandbox, sessionId)


@router.delete("/{sessionId}", status_code=204)
async def delete_session(
    sessionId: SessionId,
    sandbox: ToolboxSandbox,  # noqa: N803
    ctl: ControlDep,
) -> Response:
    """Kill the session's shell and whatever it runs; its files go too."""
    directory = await _check(ctl.engine, sandbox, sessionId)
    with contextlib.suppress(EngineError):
        await ctl.engine.processes.signal(sandbox, ProcessSelector(tag=_tag(sandbox, sessionId)), "KILL")
    with contextlib.suppress(NotFound):
        await ctl.engine.files.remove(sandbox, directory)
    return Response(status_code=204)


async def _wait(eng: Engine, sandbox: str, session_id: str, script: str) -> int:
    """The command's exit code once it has one (-1 if the session's shell ended first)."""
    started, step = time.monotonic(), 0
    while (code := await _exit_code(eng, sandbox, script)) is None:
        if time.monotonic() - started > 1 and session_id not in await _alive(eng, sandbox):
            return -1
        await asyncio.sleep(POLL[min(step, len(POLL) - 1)])
        step += 1
    return code


async def _logs(eng: Engine, sandbox: str, script: str) -> dict[str, str]:
    out = (await _read(eng, sandbox, script + ".out") or b"").decode("utf-8", "replace")
    err = (await _read(eng, sandbox, script + ".err") or b"").decode("utf-8", "replace")
    return {"output": out + err, "stdout": out, "stderr": err}


@router.post("/{sessionId}/exec")
async def execute(
    sessionId: SessionId,
    body: ExecuteRequest,
    sandbox: ToolboxSandbox,  # noqa: N803
    ctl: ControlDep,
) -> Any:
    """Run a command in the session's shell: 200 with its output once it ends, or at once 202
    with its id (``runAsync``)."""
    eng = ctl.engine
    directory = await _check(eng, sandbox, sessionId)
    if len(await _commands(eng, sandbox, directory)) >= MAX_COMMANDS:
        raise DaytonaError(409, f"session {sessionId} ran {MAX_COMMANDS} commands; start a new one")
    command_id = f"{time.time_ns():x}{secrets.token_hex(4)}"
    script = f"{directory}/{command_id}"
    await eng.files.write(sandbox, script + ".sh", _bytes(body.command.encode()))
    line = (
        f'mkfifo -m 600 "{script}.in" 2>/dev/null || : >"{script}.in"; '
        f'{{ . "{script}.sh"; }} >"{script}.out" 2>"{script}.err" <>"{script}.in"; '
        f'echo $? >"{script}.exit"; rm -f "{script}.in"\n'
    )
    await eng.processes.send_stdin(sandbox, ProcessSelector(tag=_tag(sandbox, sessionId)), line.encode())
    if body.run_async or body.async_:
        return JSONResponse({"cmdId": command_id}, 202)
    code = await _wait(eng, sandbox, sessionId, script)
    return {"cmdId": command_id, "exitCode": code, **await _logs(eng, sandbox, script)}


class InputRequest(Body):
    data: str = Field(max_length=MAX_INPUT)


#: Run in the sandbox as its user: write argv[2] to the FIFO argv[1] without ever blocking, and
#: say how it went ("ok"; "ended": no FIFO or nobody reading it; "full": the command has not
#: read what it was sent before).
WRITE_INPUT = """import os, stat, sys
try:
    if not stat.S_ISFIFO(os.stat(sys.argv[1]).st_mode):
        raise FileNotFoundError
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
except OSError:
    print("ended"); sys.exit()
data = sys.argv[2].encode()
try:
    print("ok" if os.write(fd, data) == len(data) else "full")
except BlockingIOError:
    print("full")
"""


@router.post("/{sessionId}/command/{commandId}/input", status_code=204)
async def send_input(
    sessionId: SessionId,
    commandId: CommandId,  # noqa: N803
    body: InputRequest,
    sandbox: ToolboxSandbox,
    ctl: ControlDep,
) -> Response:
    """Feed ``data`` to a running command's stdin (410 once it has ended)."""
    eng = ctl.engine
    directory = await _check(eng, sandbox, sessionId)
    command = await _command(eng, sandbox, directory, commandId)
    if "exitCode" not in command:
        said = (
            await run(
                eng,
                sandbox,
                ["python3", "-c", WRITE_INPUT, f"{directory}/{commandId}.in", body.data],
                "sending input",
            )
        ).strip()
        if said == "full":
            raise DaytonaError(
                409, f"command {commandId} has not read its earlier input yet; send this again later"
            )
        if said == "ok":
            return Response(status_code=204)
    raise DaytonaError(410, f"command {commandId} has ended: it takes no more input")


@router.get("/{sessionId}/command/{commandId}")
async def get_command(
    sessionId: SessionId,
    commandId: CommandId,  # noqa: N803
    sandbox: ToolboxSandbox,
    ctl: ControlDep,
) -> dict[str, Any]:
    directory = await _check(ctl.engine, sandbox, sessionId)
    return await _command(ctl.engine, sandbox, directory, commandId)


@router.get("/{sessionId}/command/{commandId}/logs")
async def command_logs(
    sessionId: SessionId,
    commandId: CommandId,  # noqa: N803
    sandbox: ToolboxSandbox,
    ctl: ControlDep,
) -> dict[str, str]:
    """What the command wrote so far (``follow``: the WebSocket below)."""
    directory = await _check(ctl.engine, sandbox, sessionId)
    await _command(ctl.engine, sandbox, directory, commandId)
    return await _logs(ctl.engine, sandbox, f"{directory}/{commandId}")


#: In-band stream labels of a followed log (the client demultiplexes on them).
LABELS = {"out": b"\x01\x01\x01", "err": b"\x02\x02\x02"}


@router.websocket("/{sessionId}/command/{commandId}/logs")
async def follow_logs(
    websocket: WebSocket,
    sandboxId: str,
    sessionId: str,  # noqa: N803
    commandId: str,
) -> None:
    """``?follow=true`` upgraded: the output so far, then as it comes, each piece after its
    stream's label; closed with 1000 once the command has ended and everything was sent."""
    try:
        ctl = await control(websocket)
        owned(ctl, await principal(websocket, ctl), sandboxId)
        eng = ctl.engine
        directory = await _check(eng, sandboxId, sessionId)
        await _command(eng, sandboxId, directory, commandId)
    except (DaytonaError, EngineError) as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    await websocket.accept()
    script, sent, step = f"{directory}/{commandId}", {"out": 0, "err": 0}, 0
    try:
        while True:
            finished = await _exit_code(eng, sandboxId, script) is not None or sessionId not in await _alive(
                eng, sandboxId
            )
            for kind, label in LABELS.items():
                data = await _read(eng, sandboxId, f"{script}.{kind}") or b""
                if len(data) > sent[kind]:
                    await websocket.send_bytes(label + data[sent[kind] :])
                    sent[kind] = len(data)
            if finished:
                break
            await asyncio.sleep(POLL[min(step, len(POLL) - 1)])
            step += 1
        await websocket.close(code=1000)
    except (WebSocketDisconnect, EngineError):
        return

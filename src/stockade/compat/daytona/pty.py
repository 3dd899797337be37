"""Toolbox PTY sessions (``process/pty``): a Stockade process on a pseudo-terminal, tagged
``daytona-pty-<sandbox>-<id>``, that outlives the WebSockets attached to it.

The shell starts when the first client attaches (Daytona's ``lazyStart``). Output goes to every
attached client as binary frames; input frames go to the terminal; when the shell ends, each
client gets ``{"type": "control", "status": "exited", "exitCode"}`` and a close (1000 for exit
code 0, else 1011) whose reason holds ``{"exitCode": n}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import Field
from starlette.requests import HTTPConnection

from ...engine import Engine, EngineError
from ...models import ProcessSelector, ProcessSpec, PtySize
from ._base import TOOLBOX, ControlDep, DaytonaError, DaytonaRoute, ToolboxSandbox, control
from ._base import owned, principal
from .render import iso
from .wire import Body

router = APIRouter(
    prefix=TOOLBOX + "/{sandboxId}/process/pty", route_class=DaytonaRoute, tags=["daytona toolbox"]
)
PtyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
ID = r"^[A-Za-z0-9._-]{1,64}$"
EXIT_CONTROL = "X-Daytona-Pty-Exit-Control"
ENVS = "X-Daytona-Pty-Envs~"
SHELL = "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l"


@dataclass
class Pty:
    """One terminal and the clients attached to it."""

    id: str
    sandbox: str
    cwd: str | None
    envs: dict[str, str]
    cols: int
    rows: int
    created_at: float = field(default_factory=time.time)
    process: Any = None
    reader: "asyncio.Task[None] | None" = None
    clients: set[WebSocket] = field(default_factory=set)
    exit_code: int | None = None
    started: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Set once the agent runs the shell (or it failed): a resize or kill by tag finds it.
    running: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def tag(self) -> str:
        return f"daytona-pty-{self.sandbox}-{self.id}"

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cwd": self.cwd or "",
            "envs": self.envs,
            "cols": self.cols,
            "rows": self.rows,
            "createdAt": iso(self.created_at),
            "active": self.process is not None and self.exit_code is None,
            "lazyStart": self.process is None,
        }

    async def start(self, eng: Engine) -> None:
        async with self.started:
            if self.process is not None:
                return
            self.process = await eng.processes.start(
                self.sandbox,
                ProcessSpec(
                    argv=["/bin/sh", "-c", SHELL],
                    cwd=self.cwd,
                    env=self.envs,
                    tag=self.tag,
                    pty=PtySize(cols=self.cols, rows=self.rows),
                ),
            )
            self.reader = asyncio.get_running_loop().create_task(self._read())
        await self.running.wait()

    async def _read(self) -> None:
        end: dict[str, Any] = {}
        try:
            async for event in self.process.events():
                if event["type"] == "start":
                    self.running.set()
                elif event["type"] == "pty":
                    await self._send(lambda ws, data=event["data"]: ws.send_bytes(data))
                elif event["type"] == "end":
                    end = event
        except EngineError as exc:
            end = {"exit_code": -1, "status": str(exc)}
        finally:
            self.running.set()
            code = end.get("exit_code")
            self.exit_code = code if isinstance(code, int) else -1
            control = {"type": "control", "status": "exited", "exitCode": self.exit_code}
            await self._send(lambda ws: ws.send_text(json.dumps(control)))
            reason = json.dumps({"exitCode": self.exit_code})
            await self._send(lambda ws: ws.close(1000 if self.exit_code == 0 else 1011, reason))
            self.clients.clear()

    async def _send(self, action: Any) -> None:
        for ws in list(self.clients):
            try:
                await action(ws)
            except Exception:  # noqa: BLE001 - a client gone mid-send just detaches
                self.clients.discard(ws)


class Ptys:
    """Every PTY of this server, by sandbox and id; one whose shell ended is forgotten."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Pty] = {}

    def get(self, sandbox: str, pty_id: str) -> Pty:
        found = self.items.get((sandbox, pty_id))
        if found is None or found.exit_code is not None:
            raise DaytonaError(404, f"PTY session {pty_id} not found")
        return found

    def add(self, pty: Pty) -> None:
        for ended in [k for k, p in self.items.items() if p.exit_code is not None]:
            del self.items[ended]
        key = (pty.sandbox, pty.id)
        current = self.items.get(key)
        if current is not None and current.exit_code is None:
            raise DaytonaError(409, f"PTY session {pty.id} already exists")
        self.items[key] = pty


def ptys(connection: HTTPConnection) -> Ptys:
    state = connection.app.state
    if getattr(state, "daytona_ptys", None) is None:
        state.daytona_ptys = Ptys()
    found: Ptys = state.daytona_ptys
    return found


class CreatePty(Body):
    id: str = Field(pattern=ID)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    envs: dict[str, str] | None = Field(default=None, max_length=256)
    cols: int = Field(default=80, ge=1, le=1000)
    rows: int = Field(default=24, ge=1, le=1000)
    lazy_start: bool | None = Field(default=None, alias="lazyStart")


class ResizePty(Body):
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


@router.post("", status_code=201)
async def create_pty(
    body: CreatePty, sandbox: ToolboxSandbox, ctl: ControlDep, request: Request
) -> dict[str, str]:
    pty = Pty(body.id, sandbox, body.cwd, body.envs or {}, body.cols, body.rows)
    ptys(request).add(pty)
    if body.lazy_start is False:
        await pty.start(ctl.engine)
    return {"sessionId": pty.id}


@router.get("")
async def list_ptys(sandbox: ToolboxSandbox, request: Request) -> dict[str, Any]:
    return {
        "sessions": [
            p.public() for (sb, _), p in ptys(request).items.items() if sb == sandbox and p.exit_code is None
        ]
    }


@router.get("/{sessionId}")
async def get_pty(
    sessionId: PtyId,
    sandbox: ToolboxSandbox,  # noqa: N803
    request: Request,
) -> dict[str, Any]:
    return ptys(request).get(sandbox, sessionId).public()


@router.post("/{sessionId}/resize")
async def resize_pty(
    sessionId: PtyId,
    body: ResizePty,
    sandbox: ToolboxSandbox,  # noqa: N803
    ctl: ControlDep,
    request: Request,
) -> dict[str, Any]:
    pty = ptys(request).get(sandbox, sessionId)
    if pty.process is not None:
        await ctl.engine.processes.resize(sandbox, ProcessSelector(tag=pty.tag), body.cols, body.rows)
    pty.cols, pty.rows = body.cols, body.rows
    return pty.public()


@router.delete("/{sessionId}")
async def delete_pty(
    sessionId: PtyId,
    sandbox: ToolboxSandbox,
    ctl: ControlDep,  # noqa: N803
    request: Request,
) -> dict[str, str]:
    """Kill the terminal's shell (its clients get the exit and a close)."""
    store = ptys(request)
    pty = store.get(sandbox, sessionId)
    if pty.process is not None:
        with contextlib.suppress(EngineError):
            await ctl.engine.processes.signal(sandbox, ProcessSelector(tag=pty.tag), "KILL")
    store.items.pop((sandbox, sessionId), None)
    return {"message": f"PTY session {sessionId} deleted"}


def _envs(websocket: WebSocket) -> dict[str, str]:
    """Environment sent as the subprotocol ``X-Daytona-Pty-Envs~<base64url JSON>``."""
    for offered in websocket.scope.get("subprotocols", []):
        if offered.startswith(ENVS):
            encoded = offered[len(ENVS) :]
            try:
                found = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            except (binascii.Error, ValueError):
                raise DaytonaError(400, "the PTY envs subprotocol is not base64url JSON") from None
            if not isinstance(found, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in found.items()
            ):
                raise DaytonaError(400, "PTY envs must be an object of strings")
            return found
    return {}


async def _attach(websocket: WebSocket, sandbox: str, make: Any) -> None:
    try:
        ctl = await control(websocket)
        owned(ctl, await principal(websocket, ctl), sandbox)
        pty: Pty = make(ctl)
    except DaytonaError as exc:
        await websocket.close(code=1008, reason=exc.message[:120])
        return
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=EXIT_CONTROL if EXIT_CONTROL in offered else None)
    try:
        await pty.start(ctl.engine)
    except EngineError as exc:
        await websocket.send_text(json.dumps({"type": "control", "status": "error", "error": exc.message}))
        await websocket.close(1011, exc.message[:120])
        return
    pty.clients.add(websocket)
    await websocket.send_text(json.dumps({"type": "control", "status": "connected"}))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data and pty.exit_code is None:
                await pty.process.send_stdin(data)
    except (WebSocketDisconnect, RuntimeError, EngineError):
        pass
    finally:
        pty.clients.discard(websocket)  # the terminal goes on without this client


@router.websocket("/create-connect")
async def create_connect(
    websocket: WebSocket,
    sandboxId: str,  # noqa: N803
    id: Annotated[str, Query(pattern=ID)],  # noqa: A002
    cols: Annotated[int, Query(ge=1, le=1000)] = 80,
    rows: Annotated[int, Query(ge=1, le=1000)] = 24,
    cwd: Annotated[str | None, Query(max_length=4096)] = None,
) -> None:
    """Create a PTY and attach to it in one step."""

    def make(ctl: Any) -> Pty:
        pty = Pty(id, sandboxId, cwd or None, _envs(websocket), cols, rows)
        ptys(websocket).add(pty)
        return pty

    await _attach(websocket, sandboxId, make)


@router.websocket("/{sessionId}/connect")
async def connect(websocket: WebSocket, sandboxId: str, sessionId: str) -> None:  # noqa: N803
    """Attach to a PTY (starting its shell if nobody has yet)."""
    await _attach(websocket, sandboxId, lambda ctl: ptys(websocket).get(sandboxId, sessionId))

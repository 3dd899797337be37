"""Interactive terminals in a sandbox (async core; the sync twin wraps it).

One terminal is one WebSocket to ``/sandboxes/{id}/pty`` (see server/routes/pty.py for the
messages): output arrives as bytes, keystrokes go as bytes, resizes and signals as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ..config import local_socket
from . import exceptions as exc
from ._transport import Api

log = logging.getLogger("stockade.sdk")
DataCallback = Callable[[bytes], Any]


@dataclass(frozen=True)
class PtyResult:
    """How a terminal's process ended."""

    exit_code: int
    status: str
    pid: int | None = None


class AsyncPtyHandle:
    """A running terminal: feed it keystrokes, resize it, wait for it, kill it."""

    def __init__(self, ws: ClientConnection, pid: int, on_data: DataCallback | None) -> None:
        self._ws = ws
        self.pid = pid
        self._on_data = on_data
        self._task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> PtyResult:
        end: dict[str, Any] = {}
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    await self._deliver(message)
                else:
                    event = json.loads(message)
                    if event.get("type") == "end":
                        end = event
        except ConnectionClosed:
            pass
        if not end:
            raise exc.SandboxUnavailable(
                502, "sandbox_unavailable", "the terminal closed without an exit status"
            )
        return PtyResult(int(end["exit_code"]), str(end.get("status", "exited")), self.pid)

    async def _deliver(self, data: bytes) -> None:
        if self._on_data is None:
            return
        try:
            outcome = self._on_data(data)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:  # noqa: BLE001 - a caller's callback must not break the terminal
            log.exception("terminal output callback failed")

    async def send_input(self, data: str | bytes) -> None:
        """Type ``data`` into the terminal (``"\\x03"`` is Ctrl-C)."""
        await self._send(data.encode() if isinstance(data, str) else data)

    async def resize(self, cols: int, rows: int) -> None:
        """Change the terminal's size (the process gets SIGWINCH)."""
        await self._send(json.dumps({"type": "resize", "cols": cols, "rows": rows}))

    async def signal(self, name: str) -> None:
        """Signal the terminal's process group (``"INT"``, ``"TERM"``, ``"KILL"``...)."""
        await self._send(json.dumps({"type": "signal", "signal": name}))

    async def kill(self) -> bool:
        """SIGKILL the terminal's processes; False if they had already ended."""
        if self._task.done():
            return False
        await self.signal("KILL")
        return True

    async def wait(self) -> PtyResult:
        """Wait until the terminal's process ends; its exit code and status."""
        return await asyncio.shield(self._task)

    async def disconnect(self) -> None:
        """Close the terminal (its processes are killed)."""
        await self._ws.close()
        with contextlib.suppress(Exception):
            await self._task

    async def _send(self, message: str | bytes) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed:
            raise exc.SandboxUnavailable(502, "sandbox_unavailable", "the terminal has closed") from None


class AsyncPty:
    """``sandbox.pty``: interactive terminals."""

    def __init__(self, api: Api, sandbox_id: str) -> None:
        self._api = api
        self._sandbox_id = sandbox_id

    async def create(
        self,
        cols: int = 80,
        rows: int = 24,
        *,
        on_data: DataCallback | None = None,
        cmd: str | None = None,
        user: str | None = None,
        cwd: str | None = None,
        envs: dict[str, str] | None = None,
    ) -> AsyncPtyHandle:
        """Start ``cmd`` (default: a login shell) in a ``cols`` x ``rows`` terminal;
        ``on_data`` gets its output bytes as they come."""
        query: list[tuple[str, Any]] = [("cols", cols), ("rows", rows)]
        query += [(k, v) for k, v in (("cmd", cmd), ("user", user), ("cwd", cwd)) if v]
        query += [("env", f"{k}={v}") for k, v in (envs or {}).items()]
        path = f"/sandboxes/{self._sandbox_id}/pty?{urlencode(query)}"
        try:
            ws = await self._connect(path)
        except InvalidStatus:
            # The handshake was refused (bad key, not your sandbox): ask over HTTP for why.
            await self._api.request("GET", f"/sandboxes/{self._sandbox_id}")
            raise exc.ApiError(403, "forbidden", "the server refused the terminal") from None
        except (OSError, WebSocketException, asyncio.TimeoutError) as error:
            raise exc.ConnectError(f"cannot open a terminal on the Stockade server: {error}") from None
        try:
            first = json.loads(await ws.recv())
        except (ConnectionClosed, ValueError) as error:
            await ws.close()
            raise exc.SandboxUnavailable(
                502, "sandbox_unavailable", f"the terminal closed at start: {error}"
            ) from None
        if first.get("type") == "error":
            await ws.close()
            raise exc.from_response(int(first.get("status", 500)), first)
        return AsyncPtyHandle(ws, int(first["pid"]), on_data)

    async def _connect(self, path: str) -> ClientConnection:
        config = self._api.config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        timeout = config.request_timeout
        if config.local:
            return await unix_connect(
                str(local_socket(config.data_dir)),
                "ws://stockade" + path,
                additional_headers=headers,
                open_timeout=timeout,
            )
        assert config.api_url is not None
        base = config.api_url.rstrip("/")
        url = ("wss" + base[5:] if base.startswith("https") else "ws" + base[4:]) + path
        return await connect(url, additional_headers=headers, open_timeout=timeout)

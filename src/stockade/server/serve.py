"""Run the server: on a unix socket (local mode) or a TCP port, optionally exiting when idle."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from ..engine import EngineConfig
from . import logs
from .app import create_app
from .localport import DEFAULT_PORT, bind_port
from .settings import ServerSettings

log = logging.getLogger("stockade.server")


async def _exit_when_idle(server: uvicorn.Server, app: Any, idle: float) -> None:
    """Stop the server once it has had no sandbox and no request for ``idle`` seconds."""
    while not server.should_exit:
        await asyncio.sleep(min(idle, 2.0))
        engine = getattr(app.state, "engine", None)
        quiet = time.monotonic() - app.state.activity.last_request
        if engine is not None and quiet > idle and not await engine.sandboxes.list():
            log.info("idle for %.0f s with no sandboxes; exiting", idle)
            server.should_exit = True


def _dashboard_port() -> int | None:
    """$STOCKADE_DASHBOARD_PORT: the local daemon's dashboard port, "0" any, "off" none."""
    value = os.environ.get("STOCKADE_DASHBOARD_PORT", str(DEFAULT_PORT)).strip()
    if value.lower() == "off":
        return None
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SystemExit(f"STOCKADE_DASHBOARD_PORT must be a port number or 'off', not {value!r}")
    return port


def _local_sockets(uds: Path) -> tuple[list[socket.socket], int | None]:
    """The unix socket (in its root-only directory) and the dashboard's loopback port."""
    uds.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(uds.parent, 0o700)
    if uds.exists():
        uds.unlink()
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(uds))
    unix.listen(128)
    unix.setblocking(False)
    port = _dashboard_port()
    if port is None:
        return [unix], None
    tcp = bind_port(port)
    return [unix, tcp], int(tcp.getsockname()[1])


def serve(
    config: EngineConfig,
    *,
    uds: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8800,
    idle_exit: float | None = None,
    log_level: str = "info",
    settings: ServerSettings | None = None,
) -> None:
    """Serve the API until SIGINT/SIGTERM (or idleness, with ``idle_exit``).

    With ``settings``, serve in remote mode on ``settings.host:settings.port`` (API keys, a
    store, JSON logs); otherwise in local mode on ``uds`` (or ``host:port``), and the
    dashboard on a loopback port ($STOCKADE_DASHBOARD_PORT, default 8801).
    On SIGTERM the server stops accepting, lets running requests finish (up to 10 s), then
    closes the store and the engine; sandboxes keep running and are re-attached at next start.
    """
    app = create_app(config, settings=settings)
    if settings is not None:
        logs.configure(log_level)
        host, port, uds = settings.host, settings.port, None
        log.info("serving on http://%s:%d (data in %s)", host, port, settings.data_dir)
        log.info("dashboard: http://%s:%d/ui/ ; MCP: http://%s:%d/mcp", host, port, host, port)
    sockets: list[socket.socket] | None = None
    if uds is not None:
        # Local mode has no keys: the socket's private directory is the authentication.
        sockets, ui_port = _local_sockets(uds)
        if ui_port is not None:
            app.state.dashboard_url = f"http://127.0.0.1:{ui_port}"
            log.warning(
                "dashboard on http://127.0.0.1:%d/ui/ ('stockade dashboard' prints a sign-in link)", ui_port
            )
    kwargs: dict[str, Any] = {} if sockets is not None else {"host": host, "port": port}
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=10,
            log_config=None if settings is not None else uvicorn.config.LOGGING_CONFIG,
            **kwargs,
        )
    )

    async def main() -> None:
        watcher = asyncio.create_task(_exit_when_idle(server, app, idle_exit)) if idle_exit else None
        try:
            await server.serve(sockets=sockets)
        finally:
            if watcher:
                watcher.cancel()

    try:
        # uvloop roughly halves the per-request cost of the event loop (uvicorn picks the
        # faster httptools parser by itself once it is installed).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    finally:
        for sock in sockets or []:
            sock.close()
        if uds is not None and uds.exists():
            uds.unlink()

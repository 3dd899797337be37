"""Run the server: on a unix socket (local mode) or a TCP port, optionally exiting when idle."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from ..engine import EngineConfig
from . import logs
from .app import create_app
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


def serve(config: EngineConfig, *, uds: Path | None = None, host: str = "127.0.0.1",
          port: int = 8800, idle_exit: float | None = None, log_level: str = "info",
          settings: ServerSettings | None = None) -> None:
    """Serve the API until SIGINT/SIGTERM (or idleness, with ``idle_exit``).

    With ``settings``, serve in remote mode on ``settings.host:settings.port`` (API keys, a
    store, JSON logs); otherwise in local mode on ``uds`` (or ``host:port``).
    On SIGTERM the server stops accepting, lets running requests finish (up to 10 s), then
    closes the store and the engine; sandboxes keep running and are re-attached at next start.
    """
    app = create_app(config, settings=settings)
    if settings is not None:
        logs.configure(log_level)
        host, port, uds = settings.host, settings.port, None
        log.info("serving on http://%s:%d (data in %s)", host, port, settings.data_dir)
        log.info("dashboard: http://%s:%d/ui/ ; MCP: http://%s:%d/mcp", host, port, host, port)
    if uds is not None:
        # Local mode has no keys: the socket's private directory is the authentication.
        uds.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(uds.parent, 0o700)
        if uds.exists():
            uds.unlink()
    kwargs: dict[str, Any] = ({"uds": str(uds)} if uds is not None
                              else {"host": host, "port": port})
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False,
                                           timeout_graceful_shutdown=10,
                                           log_config=None if settings is not None else
                                           uvicorn.config.LOGGING_CONFIG, **kwargs))

    async def main() -> None:
        watcher = asyncio.create_task(_exit_when_idle(server, app, idle_exit)) if idle_exit else None
        try:
            await server.serve()
        finally:
            if watcher:
                watcher.cancel()

    try:
        # uvloop roughly halves the per-request cost of the event loop (uvicorn picks the
        # faster httptools parser by itself once it is installed).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    finally:
        if uds is not None:
            if uds.exists():
                uds.unlink()

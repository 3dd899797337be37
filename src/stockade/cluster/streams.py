"""The host's stream endpoint: the native process and file routes over the host's engine, for
API replicas only (docs/cluster.md, "Streams go straight to the owning host").

Process output, stdin and file transfers travel here over HTTP, one hop from the replica to the
engine that owns the sandbox, never through Ray's object store. Every request must carry a
token signed with the cluster secret for exactly its method, path and query
(:mod:`.tokens`); anything else is refused with 401 before a route runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine import Engine
from ..server import errors
from ..server.routes import files, processes
from . import template_routes
from .shared_templates import HostTemplates
from .tokens import HEADER, verify

log = logging.getLogger("stockade.cluster")


def operation(method: str, path: str, query: str) -> str:
    """What a token is signed for: ``"GET /sandboxes/ID/files?path=..."``."""
    return f"{method} {path}?{query}"


class TokenCheck:
    """Refuse any request whose token was not signed for it with the cluster secret."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = dict(scope["headers"]).get(HEADER.encode(), b"").decode("latin-1")
        wanted = operation(scope["method"], scope["path"], scope["query_string"].decode("latin-1"))
        if not verify(self.secret, wanted, token):
            return await errors.json_error(
                scope,
                send,
                401,
                "unauthorized",
                "this endpoint serves the cluster's API replicas only "
                "(a token signed with the cluster secret is missing, "
                "expired or for another request)",
            )
        await self.app(scope, receive, send)


def stream_app(engine: Engine, secret: str, templates: HostTemplates) -> FastAPI:
    """The routes a replica reaches directly: processes and files of this host's sandboxes,
    template builds and imports (their uploads)."""
    app = FastAPI(title="Stockade host streams", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.templates = templates
    errors.install(app)
    app.include_router(processes.router)
    app.include_router(files.router)
    app.include_router(template_routes.router)
    app.add_middleware(TokenCheck, secret=secret)
    return app


class StreamServer:
    """:func:`stream_app` served on ``address`` (port picked by the kernel) on this loop."""

    def __init__(self, engine: Engine, secret: str, address: str, templates: HostTemplates) -> None:
        self._sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((address, 0))
        host, port = self._sock.getsockname()[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        config = uvicorn.Config(
            stream_app(engine, secret, templates), log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve([self._sock]))

    async def close(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)
        self._sock.close()

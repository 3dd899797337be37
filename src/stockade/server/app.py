"""The HTTP application: routes over an engine, one JSON error shape, request ids."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine import Engine, EngineConfig
from . import errors
from .routes import files, processes, sandboxes


class RequestIds:
    """Give every request an id (``X-Request-Id``), and remember when the last one came."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last_request = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.last_request = time.monotonic()
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(config: EngineConfig, engine: Engine | None = None) -> FastAPI:
    """Build the app. Without ``engine``, it opens one on ``config`` for its lifetime."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            app.state.engine = engine
            yield
            return
        async with Engine(config) as own:
            app.state.engine = own
            yield

    app = FastAPI(title="Stockade", version="0.1.0", lifespan=lifespan,
                  description="Sandboxes for untrusted, AI-generated code.")
    errors.install(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, Any]:
        """Liveness and readiness: the engine is open."""
        return {"status": "ok", "sandboxes": len(await app.state.engine.list())}

    for module in (sandboxes, processes, files):
        app.include_router(module.router)
    app.add_middleware(RequestIds)
    return app

"""The HTTP application: routes over an engine, one JSON error shape, request ids, and, in
remote mode, API keys, tenants and quotas in front of every sandbox."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from contextlib import AbstractAsyncContextManager
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..compat import daytona
from ..engine import Engine, EngineConfig
from ..mcp.http import McpEndpoint
from ..ui import Dashboard
from ..ui.sessions import Sessions
from . import errors
from .auth import PUBLIC_PATHS, AuthMiddleware, load_admin_key
from .control import Control, ControlPlane
from .limits import BodyLimit
from .logs import REQUEST_ID
from .metrics import CONTENT_TYPE, Metrics
from .routes import code, files, keys, processes, sandboxes, tenants
from .routes import volumes
from .routes import ports, pty
from .routes import templates
from .routes import dashboard
from .localport import LocalPortGate, new_daemon_key
from .routes import secrets as secret_routes
from .routes import events
from .access import AccessTokens
from .proxy import PortProxy
from .settings import ServerSettings
from .store import Store, database_url

log = logging.getLogger("stockade.server")
access = logging.getLogger("stockade.access")
DESCRIPTION = """Sandboxes for untrusted, AI-generated code.

Send `Authorization: Bearer <API key>` on every request except `/health`, `/ready` and
`/metrics`. Errors are JSON `{code, message, request_id}`; another tenant's sandbox answers
exactly like a missing one (404)."""


class Activity:
    """When the last request came (the local daemon exits after a quiet while)."""

    def __init__(self) -> None:
        self.last_request = time.monotonic()


class RequestIds:
    """Give every request an id (``X-Request-Id``), log it, count it, and remember when the
    last one came."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics | None = None, activity: "Activity | None" = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.activity = activity or Activity()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        self.activity.last_request = started = time.monotonic()
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                self._done(scope, status, started)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)

    def _done(self, scope: Scope, status: int, started: float) -> None:
        seconds = time.monotonic() - started
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        if self.metrics is not None:
            self.metrics.observe_request(scope.get("method", "WS"), route, status, seconds)
        if scope["path"] not in PUBLIC_PATHS:
            who = scope.get("state", {}).get("principal")
            access.info(
                "%s %s %d",
                scope.get("method", "WS"),
                scope["path"],
                status,
                extra={
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "actor": getattr(who, "actor", None),
                    "tenant": getattr(who, "tenant", None),
                },
            )


def create_app(
    config: EngineConfig,
    engine: Engine | None = None,
    settings: ServerSettings | None = None,
    *,
    open_engine: Callable[[], AbstractAsyncContextManager[Engine]] | None = None,
    plane: type[ControlPlane] = ControlPlane,
    access_secret: bytes | None = None,
) -> FastAPI:
    """Build the app. Without ``engine``, it opens one on ``config`` (or ``open_engine()``,
    a cluster's engine) for its lifetime.

    With ``settings`` it runs in remote mode (API keys, tenants, quotas, a store, by
    ``plane``); without, in local mode (one keyless user, as on the local daemon's private
    unix socket). ``access_secret`` signs access tokens instead of the data directory's key
    file (a cluster's replicas share one).
    """
    metrics = Metrics()
    mcp = McpEndpoint()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            eng = (
                engine
                if engine is not None
                else await stack.enter_async_context(
                    open_engine() if open_engine is not None else Engine(config)
                )
            )
            app.state.engine = eng
            control = _control(eng, metrics, settings, plane)
            await control.start()
            stack.push_async_callback(control.close)
            app.state.control = control
            await stack.enter_async_context(mcp.running())
            yield
            app.state.control = None

    app = FastAPI(title="Stockade", version="0.1.0", lifespan=lifespan, description=DESCRIPTION)
    app.state.metrics = metrics
    app.state.control = None
    errors.install(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["health"])
    async def ready() -> Response:
        """Readiness: the engine is open and the store reconciled."""
        if app.state.control is None:
            return Response('{"status":"starting"}', 503, media_type="application/json")
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get(
        "/metrics", tags=["health"], response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}}
    )
    async def prometheus() -> Response:
        """Prometheus metrics (aggregates only, no tenant labels)."""
        items = await app.state.engine.sandboxes.list() if app.state.control is not None else []
        return Response(metrics.render(items), media_type=CONTENT_TYPE)

    for module in (sandboxes, processes, files, code, keys, tenants):
        app.include_router(module.router)
    app.include_router(volumes.router)
    app.include_router(ports.router)
    app.include_router(pty.router)
    app.include_router(templates.router)
    app.include_router(secret_routes.router)
    app.include_router(events.router)
    app.include_router(daytona.router)
    app.include_router(dashboard.router)
    app.router.routes.append(mcp.route())
    app.state.access_tokens = AccessTokens(
        settings.data_dir / "private" / "access-token.key" if settings else None, access_secret
    )
    app.add_middleware(AuthMiddleware, control=lambda: app.state.control)
    sessions = app.state.ui_sessions = Sessions()
    #: Local mode: the key the dashboard uses on the daemon's TCP port (never leaves memory);
    #: the address of that port once serve() has bound it.
    app.state.daemon_key = None if settings is not None else new_daemon_key()
    app.state.dashboard_url = None
    app.add_middleware(Dashboard, sessions=sessions)  # /ui, the browser's terminal, before auth
    app.add_middleware(BodyLimit, max_body=(settings or ServerSettings()).max_body_bytes)
    app.add_middleware(
        PortProxy,
        control=lambda: app.state.control,  # before auth: its own
        tokens=app.state.access_tokens,
        domain=settings.proxy_domain if settings else None,
    )
    from ..compat.e2b.front import E2BFront  # here: compat imports server.auth/control

    app.add_middleware(
        E2BFront,
        main=app,  # E2B's SDKs (/e2b, envd hosts): own key check
        max_body=(settings or ServerSettings()).max_body_bytes,
        domain=settings.proxy_domain if settings else None,
    )
    if app.state.daemon_key is not None:  # outside every front end: one gate for the TCP port
        app.add_middleware(LocalPortGate, key=app.state.daemon_key, sessions=sessions)
    app.state.activity = Activity()
    app.add_middleware(RequestIds, metrics=metrics, activity=app.state.activity)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _control(
    engine: Engine, metrics: Metrics, settings: ServerSettings | None, plane: type[ControlPlane]
) -> Control:
    if settings is None:
        return Control(engine, metrics)
    admin_key, generated = load_admin_key(settings.admin_key, settings.admin_key_file)
    if generated:
        log.warning("generated the admin key; it is in %s (owner-only)", settings.admin_key_file)
    elif not settings.admin_key:
        log.info("admin key read from %s", settings.admin_key_file)
    store = Store(database_url(settings.data_dir, settings.database_url))
    log.info("store: %s", store.dialect)
    return plane(engine, metrics, store, settings, admin_key)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the bearer-key scheme on every route but the public ones."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key from 'stockade keys create', or the admin key",
        }
    }
    schema["security"] = [{"apiKey": []}]
    for path in PUBLIC_PATHS & set(schema.get("paths", {})):
        for operation in schema["paths"][path].values():
            operation["security"] = []
    app.openapi_schema = schema
    return schema

"""The ``/e2b`` app and the middleware that sends E2B traffic to it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ...engine import EngineError
from . import api, files, filesystem, interpreter, process, snapshots, templates, watch
from .connect import ConnectError
from .gate import E2BError

PREFIX = "/e2b"
RPC_PREFIXES = ("/e2b/process.Process/", "/e2b/filesystem.Filesystem/")


def _is_rpc(request: Request) -> bool:
    return request.url.path.startswith(RPC_PREFIXES)


def _e2b(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"code": status, "message": message, **extra}, status_code=status,
                        headers={"Should-Retry": "false"} if status == 429 else None)


def build(main: FastAPI) -> FastAPI:
    """The ``/e2b`` app over ``main``'s control plane, engine and token secret."""
    app = FastAPI(title="Stockade E2B adapter", openapi_url=None, docs_url=None,
                  redoc_url=None)
    app.state.main = main
    app.state.idempotency = api.Idempotency()
    app.state.watchers = watch.Watchers()
    for module in (api, files, process, watch, filesystem, interpreter, snapshots, templates):
        app.include_router(module.router)

    @app.exception_handler(E2BError)
    async def refused(request: Request, exc: E2BError) -> JSONResponse:
        return _e2b(exc.status, exc.message, **exc.extra)

    @app.exception_handler(ConnectError)
    async def rpc_failed(request: Request, exc: ConnectError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
        if _is_rpc(request):
            return ConnectError.of(exc).response()
        return _e2b(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return _e2b(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _e2b(404, f"{request.method} {request.url.path} is not served by "
                             f"Stockade's E2B adapter (docs/compat-e2b.md)")
        return _e2b(exc.status_code, str(exc.detail))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return _e2b(400, str(exc))

    return app


class E2BFront:
    """Send ``/e2b/...`` to the E2B app; everything else goes on to the native app.

    Signed file URLs come to ``/files`` without the prefix: the SDK builds them with
    ``urljoin(sandbox_url, "/files")``, which drops the path of ``E2B_SANDBOX_URL``. The native
    API has no ``/files``, so a ``/files`` request with a ``signature`` goes to the E2B app."""

    def __init__(self, app: ASGIApp, main: FastAPI) -> None:
        self.app = app
        self.e2b = build(main)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return await self.e2b(scope, receive, send)
        if path == "/files" and b"signature=" in scope.get("query_string", b""):
            scope = {**scope, "path": PREFIX + "/files", "raw_path": b"/e2b/files"}
            return await self.e2b(scope, receive, send)
        await self.app(scope, receive, send)

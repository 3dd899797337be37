"""The ``/e2b`` app and the middleware that sends E2B traffic to it."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ...engine import EngineError, SandboxNotFound
from ...server.limits import BodyLimit
from . import (
    api,
    builds,
    files,
    filesystem,
    gate,
    interpreter,
    process,
    snapshots,
    templates,
    unsupported,
    volumes,
    watch,
)
from .connect import ConnectError
from .gate import E2BError

PREFIX = "/e2b"
SANDBOX_HOST = re.compile(r"^(?:49983|49999)-([a-z0-9]{1,64})$")
RPC_PREFIXES = ("/e2b/process.Process/", "/e2b/filesystem.Filesystem/")


def _is_rpc(request: Request) -> bool:
    return request.url.path.startswith(RPC_PREFIXES)


def _e2b(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"code": status, "message": message, **extra},
        status_code=status,
        headers={"Should-Retry": "false"} if status == 429 else None,
    )


def build(main: FastAPI) -> FastAPI:
    """The ``/e2b`` app over ``main``'s control plane, engine and token secret."""
    app = FastAPI(title="Stockade E2B adapter", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.main = main
    app.state.watchers = watch.Watchers()
    for module in (
        unsupported,
        api,
        builds,
        files,
        process,
        watch,
        filesystem,
        interpreter,
        snapshots,
        templates,
        volumes,
    ):  # unsupported first: /sandboxes/metrics
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
        sandbox_id = request.path_params.get("sandbox_id")
        if isinstance(exc, SandboxNotFound) and sandbox_id:  # ended: say why, to its owner
            return _e2b(404, await gate.gone(request, sandbox_id) or exc.message)
        return _e2b(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "body"
        return _e2b(400, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _e2b(
                404,
                f"{request.method} {request.url.path} is not served by "
                f"Stockade's E2B adapter (docs/compat-e2b.md)",
            )
        return _e2b(exc.status_code, str(exc.detail))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return _e2b(400, str(exc))

    return app


class E2BFront:
    """Send E2B traffic to the E2B app (under the body limit); the rest goes on unchanged.

    - ``/e2b/...``: the control plane, envd and the code interpreter (``E2B_API_URL`` and
      ``E2B_SANDBOX_URL`` both at ``http://HOST:PORT/e2b``).
    - With a ``domain``, any path on host ``49983-{id}.{domain}`` (envd) or
      ``49999-{id}.{domain}`` (code interpreter), as the SDK builds per-sandbox URLs; the host
      names the sandbox (an ``E2b-Sandbox-Id`` header is replaced). Other ports on such hosts
      are the port proxy's.
    - ``/files`` with a ``signature``: signed file URLs, which the SDK builds with
      ``urljoin(sandbox_url, "/files")``, dropping the path of ``E2B_SANDBOX_URL`` (the native
      API has no ``/files``)."""

    def __init__(self, app: ASGIApp, main: FastAPI, max_body: int, domain: str | None = None) -> None:
        self.app = app
        self.e2b = BodyLimit(build(main), max_body)
        self.domain = domain.lower().strip(".") if domain else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return await self.e2b(scope, receive, send)
        if (sandbox_id := self._sandbox_host(scope)) is not None:
            headers = [(k, v) for k, v in scope["headers"] if k != b"e2b-sandbox-id"]
            scope = {
                **scope,
                "path": PREFIX + path,
                "raw_path": PREFIX.encode() + scope.get("raw_path", path.encode()),
                "headers": [*headers, (b"e2b-sandbox-id", sandbox_id.encode())],
            }
            return await self.e2b(scope, receive, send)
        if path == "/files" and b"signature=" in scope.get("query_string", b""):
            scope = {**scope, "path": PREFIX + "/files", "raw_path": b"/e2b/files"}
            return await self.e2b(scope, receive, send)
        await self.app(scope, receive, send)

    def _sandbox_host(self, scope: Scope) -> str | None:
        """The sandbox id of a ``49983-{id}.{domain}`` or ``49999-{id}.{domain}`` host."""
        if self.domain is None:
            return None
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        host = (host.rpartition(":")[0] if ":" in host else host).lower().rstrip(".")
        if not host.endswith("." + self.domain):
            return None
        match = SANDBOX_HOST.match(host[: -len(self.domain) - 1])
        return match.group(1) if match else None

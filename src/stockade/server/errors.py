"""One table from errors to JSON responses: ``{"code", "message", "request_id"}``."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Scope, Send

from ..engine import EngineError

log = logging.getLogger("stockade.server")
HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "quota_exceeded",
}


def _count(app: object, code: str) -> None:
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code=code).inc()


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    _count(request.app, code)
    return JSONResponse({"code": code, "message": message, "request_id": request_id}, status_code=status)


async def json_error(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    """Answer with the JSON error shape from ASGI middleware (before any route runs)."""
    request_id = scope.get("state", {}).get("request_id")
    _count(scope.get("app"), code)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4000 + status, "reason": message[:120]})
        return
    body = json.dumps({"code": code, "message": message, "request_id": request_id}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _describe(errors: list[dict[str, object]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = err.get("loc", ())
        where = ".".join(str(x) for x in (loc if isinstance(loc, (list, tuple)) else ()) if x != "body")
        parts.append(f"{where or 'body'}: {err.get('msg')}")
    return "; ".join(parts)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 400, "invalid_request", _describe(list(exc.errors())))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return error_response(request, 400, "invalid_request", str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, EngineError):  # raised in a middleware (authentication), not a route
            return error_response(request, exc.status, exc.code, exc.message)
        log.exception("unhandled error", extra={"request_id": request.state.request_id})
        return error_response(request, 500, "internal", f"internal error ({type(exc).__name__})")

"""What every Daytona route shares: who is calling, whose sandbox it is, and errors in the
shape the SDK turns into its exception classes (``{statusCode, message, error|code}``)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Annotated, Any, Callable, Coroutine

from fastapi import Depends, Request
from starlette.requests import HTTPConnection
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from ...engine import EngineError
from ...server.auth import Principal, bearer
from ...server.control import Control

API = "/daytona/api"
TOOLBOX = "/daytona/toolbox"
#: The SDK's source tag for toolbox errors; with a known ``code`` it picks the precise class.
DAEMON = "DAYTONA_DAEMON"
HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)*$")


class DaytonaError(Exception):
    """An error answered in Daytona's words (status, message, optional toolbox code)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_body(
    status: int, message: str, code: str | None = None, request: HTTPConnection | None = None
) -> dict[str, Any]:
    """Daytona's error: NestJS's ``{statusCode, message, error}``, plus the daemon's ``code``,
    ``source``, ``timestamp``, ``path`` and ``method`` (its ErrorResponse needs them)."""
    body: dict[str, Any] = {
        "statusCode": status,
        "message": message,
        "error": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error",
    }
    if code is not None:
        body["code"], body["source"] = code, DAEMON
    if request is not None:
        body.update(
            timestamp=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            path=request.url.path,
            method=request.scope.get("method", "GET"),
        )
    return body


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in list(exc.errors())[:5]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{where or 'body'}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


#: Toolbox error codes for engine errors on file routes (the SDK maps them to its classes).
FILE_CODES = {
    "not_found": "FILE_NOT_FOUND",
    "permission_denied": "FILE_ACCESS_DENIED",
    "invalid_request": "INVALID_FILE_PATH",
}


class DaytonaRoute(APIRoute):
    """A route whose failures are answered in Daytona's error shape, never as a crash."""

    codes: dict[str, str] = {}

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        codes = self.codes

        async def run(request: Request) -> Response:
            headers = request.scope["headers"]
            if request.method != "GET" and not any(k == b"content-type" for k, _ in headers):
                # Daytona's generated clients send some JSON bodies without a Content-Type.
                request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
                request.__dict__.pop("_headers", None)
            try:
                return await handler(request)
            except DaytonaError as exc:
                return JSONResponse(error_body(exc.status, exc.message, exc.code, request), exc.status)
            except EngineError as exc:
                return JSONResponse(
                    error_body(exc.status, exc.message, codes.get(exc.code), request), exc.status
                )
            except RequestValidationError as exc:
                return JSONResponse(error_body(400, _describe(exc), None, request), 400)
            except HTTPException as exc:
                return JSONResponse(
                    error_body(exc.status_code, str(exc.detail), None, request), exc.status_code
                )
            except ValueError as exc:
                return JSONResponse(error_body(400, str(exc), None, request), 400)

        return run


class FileRoute(DaytonaRoute):
    codes = FILE_CODES


async def control(request: HTTPConnection) -> Control:
    found: Control | None = request.app.state.control
    if found is None:
        raise DaytonaError(503, "the server is starting")
    return found


ControlDep = Annotated[Control, Depends(control)]


async def principal(request: HTTPConnection, ctl: ControlDep) -> Principal:
    """The caller, from ``Authorization: Bearer <Stockade key>`` (checked here too, so the
    Daytona front end never relies on another layer for it)."""
    token = bearer(request.scope["headers"])
    if ctl.needs_keys and token is None:
        raise DaytonaError(
            401, "missing API key: send 'Authorization: Bearer <Stockade key>' (DAYTONA_API_KEY)"
        )
    who = await ctl.authenticate(token)
    if who is None:
        raise DaytonaError(401, "invalid, revoked or expired API key")
    return who


PrincipalDep = Annotated[Principal, Depends(principal)]


def not_found(what: str) -> DaytonaError:
    return DaytonaError(404, f"Sandbox with ID or name {what} not found")


def owned(ctl: Control, who: Principal, sandbox_id: str) -> str:
    """``sandbox_id`` if ``who`` owns it; another tenant's answers exactly like a missing one."""
    if not who.may_see(ctl.owner(sandbox_id)):
        raise not_found(sandbox_id)
    return sandbox_id


async def toolbox_sandbox(
    sandboxId: str,
    ctl: ControlDep,  # noqa: N803
    who: PrincipalDep,
) -> str:
    """The toolbox's sandbox, owned by the caller (each use of it counts as activity in the
    engine, which restarts an auto-stop clock)."""
    return owned(ctl, who, sandboxId)


ToolboxSandbox = Annotated[str, Depends(toolbox_sandbox)]


def base_url(request: Request) -> str:
    """The server's address as the client reached it (``X-Forwarded-*`` first, then Host)."""
    headers = request.headers
    proto = headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = (
        (headers.get("x-forwarded-host") or headers.get("host") or request.url.netloc).split(",")[0].strip()
    )
    prefix = headers.get("x-forwarded-prefix", "").rstrip("/")
    if proto not in ("http", "https"):
        proto = "http"
    if not HOST.match(host):
        host = request.url.netloc
    if not PREFIX.match(prefix):
        prefix = ""
    return f"{proto}://{host}{prefix}"


def gib(megabytes: float) -> int:
    """Whole GiB, rounded up (the SDK checks these are integers)."""
    return max(1, math.ceil(megabytes / 1024))

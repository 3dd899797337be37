"""Everything the SDK raises, split by who is at fault::

StockadeError
├── ApiError                 the server refused the request (it says why)
│   ├── InvalidRequestError  400: fix the arguments
│   ├── AuthenticationError  401: missing, wrong, revoked or expired key
│   ├── PermissionDeniedError 403: inside the sandbox, that user may not
│   ├── NotFoundError        404: no such file, process or template
│   │   └── SandboxNotFound  404: no such sandbox (or ended, or not yours)
│   ├── ConflictError        409: clashes with the current state
│   │   ├── CheckpointCorrupt 409: a paused sandbox's saved memory is damaged (now stopped)
│   │   └── ArchiveCorrupt    409: an archived sandbox's archive is damaged (kept archived)
│   ├── QuotaExceededError   429: over a quota; try later or ask for more
│   ├── StorageFullError     507: the sandbox's disk quota is full
│   └── ServerError          5xx: a bug or an outage on the server side
│       └── SandboxUnavailable  the sandbox broke underneath (agent or runtime gone)
├── TransportError           could not talk to the server at all
│   ├── ConnectError
│   └── TimeoutError
└── SandboxError             the sandbox answered, but the outcome is a failure you asked about
    ├── CommandExitError     non-zero exit with check=True (carries the result)
    └── CommandTimeout       the command ran past its timeout and was killed
"""

from __future__ import annotations

from typing import Any


__all__ = [
    "ApiError",
    "ArchiveCorrupt",
    "AuthenticationError",
    "CheckpointCorrupt",
    "CommandExitError",
    "CommandTimeout",
    "ConflictError",
    "ConnectError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "SandboxError",
    "SandboxNotFound",
    "SandboxUnavailable",
    "ServerError",
    "StockadeError",
    "StorageFullError",
    "TimeoutError",
    "TransportError",
]


class StockadeError(Exception):
    """Base of every SDK error."""


class ApiError(StockadeError):
    """The server answered with an error."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{message} [{code}, HTTP {status}]")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id


class InvalidRequestError(ApiError):
    """The request was malformed; the message says what to change."""


class AuthenticationError(ApiError):
    """The API key is missing, wrong, revoked or expired."""


class PermissionDeniedError(ApiError):
    """Inside the sandbox, the requesting user may not do that."""


class NotFoundError(ApiError):
    """A file, process or template does not exist."""


class SandboxNotFound(NotFoundError):
    """The sandbox does not exist, has ended, or belongs to someone else."""


class ConflictError(ApiError):
    """The request clashes with the current state."""


class CheckpointCorrupt(ConflictError):
    """A paused sandbox's saved memory could not be restored; it was kept, stopped, with its
    files: start it to boot afresh."""


class ArchiveCorrupt(ConflictError):
    """An archived sandbox's archive is missing or damaged: it stays archived, its archive
    kept on the host for inspection."""


class QuotaExceededError(ApiError):
    """A quota would be exceeded."""


class StorageFullError(ApiError):
    """The sandbox's disk quota is full."""


class ServerError(ApiError):
    """The server failed."""


class SandboxUnavailable(ServerError):
    """The sandbox's agent or runtime stopped answering."""


class TransportError(StockadeError):
    """The server could not be reached or did not answer in time."""


class ConnectError(TransportError):
    """No connection to the server."""


class TimeoutError(TransportError):  # noqa: A001 - mirrors httpx's naming
    """The server did not answer in time."""


class SandboxError(StockadeError):
    """A failure inside the sandbox that the caller asked to be told about."""


class CommandExitError(SandboxError):
    """A command exited non-zero and the caller passed ``check=True``."""

    def __init__(self, result: Any) -> None:
        super().__init__(f"command exited with code {result.exit_code}: {result.stderr[-500:]}")
        self.result = result
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr


class CommandTimeout(SandboxError):
    """A command ran past its timeout and was killed."""

    def __init__(self, result: Any, timeout: float | None) -> None:
        super().__init__(f"command timed out after {timeout} s and was killed")
        self.result = result


BY_CODE: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequestError,
    "unauthorized": AuthenticationError,
    "permission_denied": PermissionDeniedError,
    "forbidden": PermissionDeniedError,
    "not_found": NotFoundError,
    "sandbox_not_found": SandboxNotFound,
    "conflict": ConflictError,
    "unsupported": ConflictError,
    "checkpoint_corrupt": CheckpointCorrupt,
    "archive_corrupt": ArchiveCorrupt,
    "quota_exceeded": QuotaExceededError,
    "insufficient_storage": StorageFullError,
    "sandbox_unavailable": SandboxUnavailable,
}


def from_response(status: int, body: Any) -> ApiError:
    """Build the right exception from an error response."""
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or ("internal" if status >= 500 else "error"))
    message = str(body.get("message") or f"HTTP {status}")
    cls = BY_CODE.get(code) or (ServerError if status >= 500 else ApiError)
    return cls(status, code, message, body.get("request_id"))

"""Engine errors, split by who is at fault. The server maps each ``code`` to an HTTP status."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine reports to its callers."""

    code = "internal"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(EngineError):
    """The caller asked for something malformed or impossible."""

    code = "invalid_request"
    status = 400


class SandboxNotFound(EngineError):
    """No such sandbox (or not yours)."""

    code = "sandbox_not_found"
    status = 404


class NotFound(EngineError):
    """A file, process or template inside or for a sandbox does not exist."""

    code = "not_found"
    status = 404


class Conflict(EngineError):
    """The request clashes with the current state (already exists, wrong state)."""

    code = "conflict"
    status = 409


class Unsupported(Conflict):
    """The sandbox's tier (or its devices) cannot do that; the message names both."""

    code = "unsupported"

    @classmethod
    def missing(cls, tier: str, capability: str, doing: str) -> "Unsupported":
        """``doing`` needs ``capability``, which the ``tier``'s driver does not declare."""
        return cls(
            f"cannot {doing}: the {tier} tier lacks the capability {capability!r} "
            f"(docs/tiers.md lists what each tier can do)"
        )


class QuotaExceeded(EngineError):
    """A limit would be exceeded."""

    code = "quota_exceeded"
    status = 429


class SandboxUnavailable(EngineError):
    """The sandbox broke underneath: its agent or runtime stopped answering."""

    code = "sandbox_unavailable"
    status = 502


class Forbidden(EngineError):
    """Inside the sandbox, the requesting user may not do that (file permissions)."""

    code = "permission_denied"
    status = 403


class InsufficientStorage(EngineError):
    """The sandbox's disk quota is full."""

    code = "insufficient_storage"
    status = 507

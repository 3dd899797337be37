"""API keys and who is calling: key format, hashing, the admin key, and the auth middleware.

A key looks like ``sk_<12 hex>_<43 url-safe chars>``: the part before the second ``_`` is its
public id (listed, used to revoke), the rest is 256 bits of secret. Only the key's SHA-256 is
stored; a high-entropy key needs no slow hash.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import json_error

if TYPE_CHECKING:
    from .control import Control

log = logging.getLogger("stockade.server")
PUBLIC_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"}
)
SANDBOX_PATH = re.compile(r"^/sandboxes/([^/]+)(?:/|$)")
#: Routes that check a URL signature themselves when a request carries one and no key
#: (Daytona's pre-signed file URLs, ``compat/daytona/file_urls.py``).
SIGNED_URL_PATH = re.compile(r"^/daytona/toolbox/[^/]+/files/(?:download|upload-v2)$")


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a tenant's key, the admin key, or the local (keyless) daemon."""

    tenant: str
    actor: str  # the key's id, "admin" or "local"
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        return self.admin or (owner is not None and owner == self.tenant)


ADMIN_TENANT = "admin"
LOCAL = Principal(tenant=ADMIN_TENANT, actor="local", admin=True)


def new_key(style: str = "stockade") -> tuple[str, str]:
    """A fresh ``(key_id, key)``. Style ``e2b`` gives ``e2b_<64 hex>``, the only shape that
    E2B's SDKs up to 2.45 accept (their client checks it); any key is looked up by its hash,
    so both styles work on every API."""
    key_id = "sk_" + secrets.token_hex(6)
    if style == "e2b":
        return key_id, "e2b_" + secrets.token_hex(32)
    return key_id, f"{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_admin_key(env_value: str | None, path: Path) -> tuple[str, bool]:
    """The admin key: ``env_value``, else the file at ``path``, else a new one written there
    (mode 0600). Returns the key and whether it was generated now."""
    if env_value:
        if len(env_value) < 16:
            raise ValueError("STOCKADE_ADMIN_KEY must be at least 16 characters long")
        return env_value, False
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key, False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = "sk_admin_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key, True


@dataclass
class _Cached:
    principal: Principal
    expires_at: float | None
    fetched: float


class KeyCache:
    """Validated keys by hash, trusted for ``ttl`` seconds; revocations here evict at once."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._by_hash: dict[str, _Cached] = {}

    def get(self, digest: str, now: float) -> Principal | None:
        entry = self._by_hash.get(digest)
        if entry is None or now - entry.fetched > self.ttl:
            return None
        if entry.expires_at is not None and now >= entry.expires_at:
            return None
        return entry.principal

    def put(self, digest: str, principal: Principal, expires_at: float | None) -> None:
        if len(self._by_hash) > 10000:
            self._by_hash.clear()
        self._by_hash[digest] = _Cached(principal, expires_at, time.time())

    def forget(self, key_id: str) -> None:
        for digest in [d for d, e in self._by_hash.items() if e.principal.actor == key_id]:
            del self._by_hash[digest]


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class AuthMiddleware:
    """Authenticate every request but the public ones, and hide other tenants' sandboxes.

    A request for ``/sandboxes/{id}/...`` that the caller does not own answers exactly as a
    missing sandbox does (404), so ids cannot be probed across tenants.
    """

    def __init__(self, app: ASGIApp, control: Callable[[], "Control | None"]) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        control = self.control()
        if control is None:
            return await json_error(scope, send, 503, "unavailable", "the server is starting")
        token = bearer(scope["headers"])
        if token is None and _signed_url(scope):
            return await self.app(scope, receive, send)
        if control.needs_keys and token is None:
            return await json_error(
                scope, send, 401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'"
            )
        principal = await control.authenticate(token)
        if principal is None:
            return await json_error(scope, send, 401, "unauthorized", "invalid, revoked or expired API key")
        scope.setdefault("state", {})["principal"] = principal
        match = SANDBOX_PATH.match(scope["path"])
        if match and not principal.may_see(control.owner(match.group(1))):
            return await json_error(scope, send, 404, "sandbox_not_found", not_found_message(match.group(1)))
        await self.app(scope, receive, send)


def not_found_message(sandbox_id: str) -> str:
    """The engine's words for a missing sandbox, so that 'not yours' reads the same."""
    return f"sandbox {sandbox_id!r} does not exist (or has ended)"


def _signed_url(scope: Scope) -> bool:
    return bool(SIGNED_URL_PATH.match(scope["path"])) and b"signature=" in scope.get("query_string", b"")

"""Short-lived tokens for the replica-to-host stream channel, signed with the cluster secret.

A token names one sandbox and one operation (``"POST /sandboxes/ID/processes"``) and expires
after :data:`TOKEN_LIFETIME` seconds, so a token seen on the wire opens nothing else. Replicas
and hosts share ``$STOCKADE_CLUSTER_SECRET``; nobody else can sign.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

HEADER = "x-stockade-cluster-token"
TOKEN_LIFETIME = 60.0
SECRET_ENV = "STOCKADE_CLUSTER_SECRET"
MIN_SECRET = 16


def cluster_secret() -> str:
    """``$STOCKADE_CLUSTER_SECRET``, or SystemExit saying how to set it."""
    secret = os.environ.get(SECRET_ENV, "")
    if len(secret) < MIN_SECRET:
        raise SystemExit(
            f"${SECRET_ENV} must be set (at least {MIN_SECRET} characters), the "
            f"same on every host and API replica: it authenticates the streams "
            f"between them (e.g. openssl rand -hex 20)"
        )
    return secret


def _mac(secret: str, operation: str, expires: int) -> str:
    message = f"{operation}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, operation: str, now: float | None = None) -> str:
    """A token for ``operation`` (method and path), valid :data:`TOKEN_LIFETIME` seconds."""
    expires = int((now or time.time()) + TOKEN_LIFETIME)
    return f"{expires}.{_mac(secret, operation, expires)}"


def verify(secret: str, operation: str, token: str, now: float | None = None) -> bool:
    """True if ``token`` was signed for exactly ``operation`` and has not expired."""
    expires_text, _, mac = token.partition(".")
    if not expires_text.isdigit():
        return False
    expires = int(expires_text)
    if expires < (now or time.time()):
        return False
    return hmac.compare_digest(mac, _mac(secret, operation, expires))

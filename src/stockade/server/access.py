"""Per-sandbox access tokens for the port proxy: links that can be handed to a browser.

A token is ``<expiry>.<mac>``: the expiry (unix seconds, hex) and an HMAC-SHA256 of
``sandbox id + expiry`` under the server's token secret. Nothing is stored: a token is valid for
its one sandbox (any port) until its expiry or until the sandbox ends, whichever comes first,
and every token dies when the secret file is replaced. The secret lives in
``<data dir>/private/access-token.key`` (owner-only, made at first use). A cluster's API replicas
derive theirs from the cluster secret instead, so a token minted by one opens ports through any
other. The local (keyless) daemon uses a secret that lives only in memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

#: Seconds a token lives when the caller does not say (and the most it may ask for).
DEFAULT_TTL = 3600.0
MAX_TTL = 7 * 86400.0


class AccessTokens:
    """Mint and check access tokens with one secret."""

    def __init__(self, secret_file: Path | None, secret: bytes | None = None) -> None:
        """Read (or make) the secret in ``secret_file``, or use ``secret``; with neither, a
        random one that lives as long as this object."""
        self._file = secret_file
        self._secret = secret if secret is not None or secret_file is not None else secrets.token_bytes(32)

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            assert self._file is not None
            self._secret = _load_or_create(self._file)
        return self._secret

    def _mac(self, sandbox_id: str, expires: str) -> str:
        digest = hmac.new(self.secret, f"{sandbox_id}\n{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")

    def mint(self, sandbox_id: str, ttl: float = DEFAULT_TTL) -> tuple[str, float]:
        """A token for ``sandbox_id`` and its expiry time (unix seconds)."""
        expires_at = int(time.time() + min(max(ttl, 1.0), MAX_TTL))
        expires = format(expires_at, "x")
        return f"{expires}.{self._mac(sandbox_id, expires)}", float(expires_at)

    def check(self, sandbox_id: str, token: str) -> float | None:
        """The token's expiry if it is a live token for ``sandbox_id``, else None."""
        expires, sep, mac = token.partition(".")
        if not sep or len(expires) > 16 or len(mac) > 64:
            return None
        try:
            expires_at = int(expires, 16)
        except ValueError:
            return None
        if expires_at <= time.time():
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(sandbox_id, expires).encode()):
            return None
        return float(expires_at)


def _load_or_create(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_bytes(32).hex() + "\n")
        try:
            os.link(tmp, path)  # atomic and exclusive: a replica that won the race keeps its own
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    secret = bytes.fromhex(path.read_text().strip())
    if len(secret) < 16:
        raise ValueError(
            f"{path} must hold at least 16 random bytes in hex; delete it to make "
            f"a new one (every access token then stops working)"
        )
    return secret

"""Secrets at rest: per-owner, AES-GCM encrypted, bound to the hosts they may be sent to.

One installation key (``<data>/private/secrets.key``, 32 random bytes, created 0600 on first
use) encrypts every value; the owner and the secret's name are the associated data, so a value
copied into another owner's file or under another name does not decrypt. Each owner's secrets
live in one JSON file (``<data>/private/secrets/<sha256(owner)>.json``, 0600, written
atomically) holding names, hosts, times, nonces and ciphertexts; never a value in clear.
Only the egress proxy asks for a value (:meth:`Vault.reveal`), per connection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_HOST = re.compile(r"^(\*\.)?[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*$")
MAX_SECRETS = 256  # per owner
MAX_VALUE = 8192  # bytes
MAX_HOSTS = 32


class SecretError(ValueError):
    """A request about a secret is invalid; the message says what to change."""


@dataclass(frozen=True)
class Secret:
    """One stored secret without its value."""

    name: str
    hosts: tuple[str, ...]
    inject_body: bool
    created_at: float
    updated_at: float
    description: str | None = None

    def bound_to(self, host: str) -> bool:
        """Whether ``host`` (a normalised name) is one of the hosts this secret may go to."""
        return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in self.hosts)


def check_hosts(hosts: list[str]) -> tuple[str, ...]:
    """Normalised host names / ``*.`` wildcards; :class:`SecretError` for anything else."""
    if not 1 <= len(hosts) <= MAX_HOSTS:
        raise SecretError(f"hosts: give 1 to {MAX_HOSTS} host names the secret may be sent to")
    out = []
    for raw in hosts:
        host = raw.strip().lower().rstrip(".")
        if len(host) > 253 or not _HOST.match(host) or host.replace(".", "").isdigit():
            raise SecretError(
                f"hosts: {raw[:80]!r} is not a host name or '*.domain' wildcard "
                f"(IP addresses are not accepted: a secret is bound to a name "
                f"the real host proves with its certificate)"
            )
        out.append(host)
    return tuple(dict.fromkeys(out))


def check_value(value: str) -> bytes:
    """The value as bytes; printable ASCII only (it goes into HTTP headers)."""
    data = value.encode("utf-8")
    if not 1 <= len(data) <= MAX_VALUE or not all(0x20 <= b < 0x7F for b in data):
        raise SecretError(
            f"value: 1 to {MAX_VALUE} printable ASCII characters (no control "
            f"characters or line breaks: it is written into HTTP request headers)"
        )
    return data


class Vault:
    """The secrets of every owner of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.private = data_dir / "private"
        self.dir = self.private / "secrets"
        self._key: AESGCM | None = None
        self._cache: dict[str, dict[str, dict[str, object]]] = {}

    # -- files ---------------------------------------------------------------------------------
    def _aead(self) -> AESGCM:
        if self._key is None:
            self._key = AESGCM(_key_file(self.private / "secrets.key", 32))
        return self._key

    def _path(self, owner: str) -> Path:
        return self.dir / f"{hashlib.sha256(owner.encode()).hexdigest()[:32]}.json"

    def _load(self, owner: str) -> dict[str, dict[str, object]]:
        if owner not in self._cache:
            try:
                self._cache[owner] = json.loads(self._path(owner).read_text())
            except FileNotFoundError:
                self._cache[owner] = {}
        return self._cache[owner]

    def _save(self, owner: str, rows: dict[str, dict[str, object]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(owner)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f)
        os.replace(tmp, path)
        self._cache[owner] = rows

    # -- the service ---------------------------------------------------------------------------
    def put(
        self,
        owner: str,
        name: str,
        value: str,
        hosts: list[str],
        inject_body: bool = False,
        description: str | None = None,
    ) -> Secret:
        """Create or replace secret ``name`` of ``owner``."""
        if not NAME.match(name):
            raise SecretError(
                f"name: {name[:80]!r} must be 1 to 64 letters, digits, '_', '-' "
                f"or '.' (not starting with '-' or '.')"
            )
        data, bound = check_value(value), check_hosts(hosts)
        rows = dict(self._load(owner))
        if name not in rows and len(rows) >= MAX_SECRETS:
            raise SecretError(f"an owner may keep at most {MAX_SECRETS} secrets; delete one")
        now = time.time()
        nonce = os.urandom(12)
        sealed = self._aead().encrypt(nonce, data, _aad(owner, name))
        created = rows[name]["created_at"] if name in rows else now
        rows[name] = {
            "hosts": list(bound),
            "inject_body": inject_body,
            "created_at": created,
            "description": description,
            "updated_at": now,
            "nonce": base64.b64encode(nonce).decode(),
            "sealed": base64.b64encode(sealed).decode(),
        }
        self._save(owner, rows)
        return self._secret(name, rows[name])

    def get(self, owner: str, name: str) -> Secret | None:
        row = self._load(owner).get(name)
        return self._secret(name, row) if row else None

    def list(self, owner: str) -> list[Secret]:
        return [self._secret(n, r) for n, r in sorted(self._load(owner).items())]

    def delete(self, owner: str, name: str) -> bool:
        rows = dict(self._load(owner))
        if rows.pop(name, None) is None:
            return False
        self._save(owner, rows)
        return True

    def reveal(self, owner: str, name: str) -> bytes | None:
        """The value (for the egress proxy only), or None once deleted."""
        row = self._load(owner).get(name)
        if row is None:
            return None
        return self._aead().decrypt(
            base64.b64decode(str(row["nonce"])), base64.b64decode(str(row["sealed"])), _aad(owner, name)
        )

    @staticmethod
    def _secret(name: str, row: dict[str, object]) -> Secret:
        hosts = row["hosts"]
        assert isinstance(hosts, list)
        return Secret(
            name=name,
            hosts=tuple(hosts),
            inject_body=bool(row["inject_body"]),
            created_at=float(row["created_at"]),  # type: ignore[arg-type]
            updated_at=float(row["updated_at"]),  # type: ignore[arg-type]
            description=str(row["description"]) if row.get("description") else None,
        )


def _aad(owner: str, name: str) -> bytes:
    return json.dumps([owner, name]).encode()


def _key_file(path: Path, size: int) -> bytes:
    """The key in ``path``, made (random, 0600, never replaced) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != size:
            raise SecretError(
                f"{path} is not a {size}-byte key; restore it from a backup "
                f"(without it no stored secret can be read)"
            ) from None
        return key
    key = os.urandom(size)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key

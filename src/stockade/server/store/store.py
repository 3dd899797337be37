"""``Store``: the control plane's persistent state behind a small, synchronous interface.

Calls block (SQLite and PostgreSQL over loopback answer in well under a millisecond); the server
runs them on one worker thread so they never stall its event loop.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

from alembic import command
from alembic.config import Config
import sqlalchemy.exc
from sqlalchemy import create_engine, delete, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ...engine import Conflict, EngineError, NotFound
from .schema import ApiKey, AuditEvent, IdempotencyKey, OwnedSandbox, Tenant

MIGRATIONS = Path(__file__).parent / "migrations"
#: The PostgreSQL advisory lock that serialises migrations ("stockade" in ASCII, truncated).
MIGRATION_LOCK = 0x73746F636B616465
QUOTA_FIELDS = ("max_sandboxes", "max_vcpu", "max_memory_mb", "max_lifetime", "max_disk_mb")


#: What a store call raises when the database does not answer (down, restarting, locked).
STORE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


class StoreUnavailable(EngineError):
    """The database did not answer (restarting, unreachable, locked): retry in a moment."""

    code = "store_unavailable"
    status = 503


def database_url(data_dir: Path, url: str | None = None) -> str:
    """``url`` or ``$STOCKADE_DATABASE_URL``, else SQLite at ``<data_dir>/private/stockade.db``."""
    url = url or os.environ.get("STOCKADE_DATABASE_URL") or None
    if url is None:
        return f"sqlite:///{data_dir / 'private' / 'stockade.db'}"
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=4)
    path = url.split(":///", 1)[1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


class Store:
    """Tenants, keys, sandbox ownership and audit events in one SQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the newest migration (replicas starting together on PostgreSQL
        take turns: an advisory lock held until the migration commits)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._session()

    # -- tenants ---------------------------------------------------------------------------
    def tenant(self, name: str) -> Tenant | None:
        with self.session() as s:
            return s.get(Tenant, name)

    def tenants(self) -> list[Tenant]:
        with self.session() as s:
            return list(s.scalars(select(Tenant).order_by(Tenant.name)))

    def create_tenant(
        self, name: str, quotas: dict[str, Any] | None = None, exist_ok: bool = False
    ) -> tuple[Tenant, bool]:
        """The tenant ``name``, created if missing; also says whether it was created."""
        with self.session() as s:
            if (found := s.get(Tenant, name)) is not None:
                if exist_ok:
                    return found, False
                raise Conflict(f"tenant {name!r} already exists")
            tenant = Tenant(name=name, created_at=time.time(), **(quotas or {}))
            s.add(tenant)
            try:
                s.commit()
            except IntegrityError:  # created meanwhile by another replica
                s.rollback()
                if not exist_ok:
                    raise Conflict(f"tenant {name!r} already exists") from None
                return s.get(Tenant, name), False  # type: ignore[return-value]
            return tenant, True

    def update_tenant(self, name: str, quotas: dict[str, Any]) -> Tenant:
        with self.session() as s:
            tenant = s.get(Tenant, name)
            if tenant is None:
                raise NotFound(f"tenant {name!r} does not exist")
            for key, value in quotas.items():
                if key in QUOTA_FIELDS:
                    setattr(tenant, key, value)
            s.commit()
            return tenant

    # -- API keys --------------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> ApiKey:
        with self.session() as s:
            s.add(key)
            s.commit()
            return key

    def key_by_hash(self, sha256: str) -> ApiKey | None:
        with self.session() as s:
            return s.scalars(select(ApiKey).where(ApiKey.sha256 == sha256)).first()

    def keys(self, tenant: str | None = None) -> list[ApiKey]:
        with self.session() as s:
            query = select(ApiKey).order_by(ApiKey.created_at)
            if tenant is not None:
                query = query.where(ApiKey.tenant == tenant)
            return list(s.scalars(query))

    def revoke_key(self, key_id: str, tenant: str | None = None) -> ApiKey:
        """Mark the key revoked (``tenant``, when given, must own it)."""
        with self.session() as s:
            key = s.get(ApiKey, key_id)
            if key is None or (tenant is not None and key.tenant != tenant):
                raise NotFound(f"no API key {key_id!r}")
            if key.revoked_at is None:
                key.revoked_at = time.time()
                s.commit()
            return key

    # -- sandbox ownership -------------------------------------------------------------------
    def add_sandbox(self, row: OwnedSandbox, event: AuditEvent | None = None) -> None:
        """Record who owns a sandbox (and ``event``, in the same transaction)."""
        with self.session() as s:
            s.add(row)
            if event is not None:
                s.add(event)
            s.commit()

    def remove_sandboxes(self, ids: Iterable[str], event: AuditEvent | None = None) -> None:
        """Forget sandboxes (and record ``event``, in the same transaction)."""
        ids = list(ids)
        if not ids and event is None:
            return
        with self.session() as s:
            if ids:
                s.execute(delete(OwnedSandbox).where(OwnedSandbox.id.in_(ids)))
            if event is not None:
                s.add(event)
            s.commit()

    def sandboxes(self) -> list[OwnedSandbox]:
        with self.session() as s:
            return list(s.scalars(select(OwnedSandbox)))

    def set_sandbox_resources(
        self, sandbox_id: str, cpu: float, memory_mb: int, event: AuditEvent | None = None
    ) -> None:
        """Record a resized sandbox's limits (and ``event``, in the same transaction)."""
        with self.session() as s:
            row = s.get(OwnedSandbox, sandbox_id)
            if row is not None:
                row.cpu, row.memory_mb = cpu, memory_mb
            if event is not None:
                s.add(event)
            s.commit()

    def file_url_salt(self, sandbox_id: str) -> str | None:
        """The salt of the sandbox's file-URL signing key (None if never rotated)."""
        with self.session() as s:
            row = s.get(OwnedSandbox, sandbox_id)
            return None if row is None else row.file_url_salt

    def set_file_url_salt(self, sandbox_id: str, salt: str) -> None:
        with self.session() as s:
            row = s.get(OwnedSandbox, sandbox_id)
            if row is None:
                raise NotFound(f"sandbox {sandbox_id!r} does not exist (or has ended)")
            row.file_url_salt = salt
            s.commit()

    # -- idempotency keys -----------------------------------------------------------------
    def claim_key(self, tenant: str, key: str, ttl: float) -> tuple[bool, str | None]:
        """Claim ``key`` for a create: ``(True, None)`` if this caller now holds it, else
        ``(False, sandbox_id)`` (None while the holder's create runs). A claim older than
        ``ttl`` is taken over."""
        now = time.time()
        with self.session() as s:
            row = s.get(IdempotencyKey, (tenant, key))
            if row is not None and now - row.created_at <= ttl:
                return False, row.sandbox_id
            if row is not None:
                s.delete(row)
                s.flush()
            s.add(IdempotencyKey(tenant=tenant, key=key, sandbox_id=None, created_at=now))
            try:
                s.commit()
            except IntegrityError:  # claimed meanwhile by another request or replica
                s.rollback()
                return False, None
            return True, None

    def settle_key(self, tenant: str, key: str, sandbox_id: str | None) -> None:
        """Record the sandbox a claimed key made, or (None) release the claim."""
        with self.session() as s:
            row = s.get(IdempotencyKey, (tenant, key))
            if row is None:
                return
            if sandbox_id is None:
                s.delete(row)
            else:
                row.sandbox_id = sandbox_id
            s.commit()

    # -- audit -------------------------------------------------------------------------------
    @staticmethod
    def event(
        *,
        tenant: str | None,
        actor: str,
        action: str,
        target: str | None = None,
        request_id: str | None = None,
        **detail: Any,
    ) -> AuditEvent:
        """An audit event as of now, to store with :meth:`audit` or with another change."""
        return AuditEvent(
            at=time.time(),
            tenant=tenant,
            actor=actor,
            action=action,
            target=target,
            request_id=request_id,
            detail=detail,
        )

    def audit(
        self,
        *,
        tenant: str | None,
        actor: str,
        action: str,
        target: str | None = None,
        request_id: str | None = None,
        **detail: Any,
    ) -> None:
        with self.session() as s:
            s.add(
                self.event(
                    tenant=tenant, actor=actor, action=action, target=target, request_id=request_id, **detail
                )
            )
            s.commit()

    def audit_events(self, tenant: str | None = None, after: int = 0, limit: int = 100) -> list[AuditEvent]:
        with self.session() as s:
            query = select(AuditEvent).where(AuditEvent.id > after)
            if tenant is not None:
                query = query.where(AuditEvent.tenant == tenant)
            return list(s.scalars(query.order_by(AuditEvent.id).limit(limit)))

"""The store's tables (SQLAlchemy 2 declarative). Change them only with a new migration."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """Who owns sandboxes and keys. Quotas left null use the server's defaults."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    max_sandboxes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_vcpu: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_lifetime: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_disk_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ApiKey(Base):
    """An API key: only its SHA-256 is kept; ``id`` is the public prefix shown in listings."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class OwnedSandbox(Base):
    """Which tenant a sandbox belongs to, and what it counts against the tenant's quotas."""

    __tablename__ = "sandboxes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), index=True)
    isolation: Mapped[str] = mapped_column(String(32))
    cpu: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    #: Changed to retire every signed file URL of the sandbox (null: never rotated).
    file_url_salt: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)


class AuditEvent(Base):
    """Something a tenant (or the admin) did or that happened to its resources."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_tenant_id", "tenant", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IdempotencyKey(Base):
    """A create sent with an ``Idempotency-Key``: a retry gets the sandbox the first made.
    ``sandbox_id`` is null while the first create runs."""

    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    sandbox_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)

"""The cluster's source of truth in PostgreSQL: hosts, and each sandbox with its placement.

Calls block (loopback PostgreSQL answers in well under a millisecond); the API runs them on a
worker thread. Every replica reads and writes the same rows, so any replica can answer for any
sandbox. The tables are created if missing (``create_all``); they join the store's Alembic
migrations when the API replicas take over tenants and keys (docs/cluster.md, "Later").
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Float, String, create_engine, delete, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from ..models import SandboxInfo

#: A host's state: ``alive`` (its actor answers) or ``down`` (its Ray node or actor is gone).
ALIVE, DOWN = "alive", "down"
#: The state of a sandbox whose host is down; ``reason`` says why.
LOST = "lost"


class Base(DeclarativeBase):
    pass


class HostRow(Base):
    __tablename__ = "cluster_hosts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    seen_at: Mapped[float] = mapped_column(Float)


class SandboxRow(Base):
    """A sandbox, the host it was placed on and the placement group holding its slot."""

    __tablename__ = "cluster_sandboxes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(128), index=True)
    placement: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)

    def sandbox(self) -> SandboxInfo:
        """The sandbox as last seen, with the cluster's view of its state."""
        return SandboxInfo.model_validate({**self.info, "state": self.state,
                                           "reason": self.reason})


def sql_url(url: str) -> str:
    """``postgresql://`` URLs use psycopg 3 (the driver the store already depends on)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


class ClusterState:
    """Hosts and placed sandboxes, shared by every API replica."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(sql_url(url), pool_pre_ping=True, pool_size=4)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- hosts -----------------------------------------------------------------------------
    def host_seen(self, name: str, node_id: str) -> bool:
        """Record that host ``name`` answers; True if it was down (or new) until now."""
        with self._session() as s:
            row = s.get(HostRow, name)
            came_back = row is None or row.state != ALIVE or row.node_id != node_id
            if row is None:
                s.add(HostRow(name=name, node_id=node_id, state=ALIVE, seen_at=time.time()))
            else:
                row.node_id, row.state, row.reason = node_id, ALIVE, None
                row.seen_at = time.time()
            s.commit()
            return came_back

    def host_down(self, name: str, reason: str) -> None:
        """Mark host ``name`` down and every sandbox on it lost, with ``reason``."""
        with self._session() as s:
            s.execute(update(HostRow).where(HostRow.name == name, HostRow.state == ALIVE)
                      .values(state=DOWN, reason=reason))
            s.execute(update(SandboxRow).where(SandboxRow.host == name)
                      .values(state=LOST, reason=reason, updated_at=time.time()))
            s.commit()

    def hosts(self) -> list[HostRow]:
        with self._session() as s:
            return list(s.scalars(select(HostRow).order_by(HostRow.name)))

    # -- sandboxes -------------------------------------------------------------------------
    def add_sandbox(self, info: SandboxInfo, host: str, placement: str) -> None:
        with self._session() as s:
            s.add(SandboxRow(id=info.id, host=host, placement=placement, state=info.state,
                             reason=info.reason, info=info.model_dump(mode="json"),
                             updated_at=time.time()))
            s.commit()

    def sandbox(self, sandbox_id: str) -> SandboxRow | None:
        with self._session() as s:
            return s.get(SandboxRow, sandbox_id)

    def sandboxes(self, host: str | None = None) -> list[SandboxRow]:
        with self._session() as s:
            query = select(SandboxRow).order_by(SandboxRow.id)
            if host is not None:
                query = query.where(SandboxRow.host == host)
            return list(s.scalars(query))

    def refresh(self, info: SandboxInfo) -> None:
        """Record what the owning host says about the sandbox now."""
        with self._session() as s:
            s.execute(update(SandboxRow).where(SandboxRow.id == info.id)
                      .values(state=info.state, reason=info.reason,
                              info=info.model_dump(mode="json"), updated_at=time.time()))
            s.commit()

    def remove_sandbox(self, sandbox_id: str) -> None:
        with self._session() as s:
            s.execute(delete(SandboxRow).where(SandboxRow.id == sandbox_id))
            s.commit()

"""The cluster's source of truth in PostgreSQL: hosts, and each sandbox with its placement.

Calls block (loopback PostgreSQL answers in well under a millisecond); the API runs them on a
worker thread. Every replica reads and writes the same rows, so any replica can answer for any
sandbox. The tables belong to the store's schema: they are made and changed by its Alembic
migrations (``server/store/migrations``, 0004 onwards), which :class:`ClusterState` applies when
it opens; change them only with a new migration.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Boolean, Float, String, create_engine, delete, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from ..models import SandboxInfo
from ..server.store import Store

#: A host's state: ``alive`` (its actor answers) or ``down`` (its Ray node or actor is gone).
ALIVE, DOWN = "alive", "down"
#: The state of a sandbox whose host is down; ``reason`` says why.
LOST = "lost"
#: A lost workspace being restarted on another host by one replica (the others keep off).
MOVING = "moving"
#: The states a workspace can be restarted from on another host (its files are on shared
#: storage then); a running or paused one has its disk only on its own host.
MOVABLE = ("stopped", "archived")


class Base(DeclarativeBase):
    pass


class HostRow(Base):
    __tablename__ = "cluster_hosts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    seen_at: Mapped[float] = mapped_column(Float)
    #: Takes no new sandboxes (``stockade host drain``); its own keep running.
    draining: Mapped[bool] = mapped_column(Boolean, default=False)


class SandboxRow(Base):
    """A sandbox, the host it was placed on and the placement group holding its slot."""

    __tablename__ = "cluster_sandboxes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(128), index=True)
    placement: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    #: What the cluster says about a lost sandbox (how to get it back), in words.
    message: Mapped[str | None] = mapped_column(String(512), nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)

    def sandbox(self) -> SandboxInfo:
        """The sandbox as last seen, with the cluster's view of its state."""
        override = {"state": self.state, "reason": self.reason}
        if self.state in (LOST, MOVING):
            override["message"] = self.message
        return SandboxInfo.model_validate({**self.info, **override})

    @property
    def movable(self) -> bool:
        """A workspace that was stopped or archived when its host went: its last state is
        on shared storage and another host can start it."""
        return self.info.get("persistence") == "workspace" and self.info.get("state") in MOVABLE


def lost_message(row: SandboxRow, host: str) -> str:
    """Why ``row``'s sandbox is lost with host ``host``, and what can bring it back."""
    if row.movable:
        return (
            f"lost with its host {host}; it was {row.info.get('state')}: start it to "
            f"restart it on another host from its last stopped state on shared storage"
        )
    if row.info.get("persistence") == "workspace":
        return (
            f"lost with its host {host}; it was {row.info.get('state')}, so its disk is "
            f"only on {host}: start host {host} again to get it back, or kill it"
        )
    return f"lost with its host {host}"


def sql_url(url: str) -> str:
    """``postgresql://`` URLs use psycopg 3 (the driver the store already depends on)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


class ClusterState:
    """Hosts and placed sandboxes, shared by every API replica."""

    def __init__(self, url: str) -> None:
        store = Store(sql_url(url))
        try:
            store.migrate()
        finally:
            store.close()
        self.engine = create_engine(sql_url(url), pool_pre_ping=True, pool_size=4)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # -- hosts -----------------------------------------------------------------------------
    def host_seen(self, name: str, node_id: str) -> bool:
        """Record that host ``name`` answers; True if it was down (or new) until now."""
        with self._session() as s:
            row = s.get(HostRow, name)
            came_back = row is None or row.state != ALIVE or row.node_id != node_id
            if row is None:
                s.add(HostRow(name=name, node_id=node_id, state=ALIVE, seen_at=time.time(), draining=False))
            else:
                row.node_id, row.state, row.reason = node_id, ALIVE, None
                row.seen_at = time.time()
            s.commit()
            return came_back

    def host_down(self, name: str, reason: str) -> None:
        """Mark host ``name`` down and every sandbox on it lost, with ``reason`` (and words
        saying whether another host can start it)."""
        with self._session() as s:
            s.execute(
                update(HostRow)
                .where(HostRow.name == name, HostRow.state == ALIVE)
                .values(state=DOWN, reason=reason)
            )
            rows = s.scalars(select(SandboxRow).where(SandboxRow.host == name, SandboxRow.state != MOVING))
            for row in rows:
                if row.state != LOST:
                    row.state, row.reason, row.updated_at = LOST, reason, time.time()
                    row.message = lost_message(row, name)
            s.commit()

    def set_draining(self, name: str, draining: bool) -> HostRow | None:
        """Mark host ``name`` draining (no new sandboxes) or not; None if no such host."""
        with self._session() as s:
            row = s.get(HostRow, name)
            if row is not None:
                row.draining = draining
                s.commit()
            return row

    def hosts(self) -> list[HostRow]:
        with self._session() as s:
            return list(s.scalars(select(HostRow).order_by(HostRow.name)))

    # -- sandboxes -------------------------------------------------------------------------
    def add_sandbox(self, info: SandboxInfo, host: str, placement: str) -> None:
        with self._session() as s:
            s.add(
                SandboxRow(
                    id=info.id,
                    host=host,
                    placement=placement,
                    state=info.state,
                    reason=info.reason,
                    info=info.model_dump(mode="json"),
                    updated_at=time.time(),
                )
            )
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
            s.execute(
                update(SandboxRow)
                .where(SandboxRow.id == info.id)
                .values(
                    state=info.state,
                    reason=info.reason,
                    message=None,
                    info=info.model_dump(mode="json"),
                    updated_at=time.time(),
                )
            )
            s.commit()

    def claim_move(self, sandbox_id: str) -> SandboxRow | None:
        """Take a lost sandbox for restarting elsewhere: its row, now ``moving``, or None if
        it is not lost (another replica took it first, or its host came back)."""
        with self._session() as s:
            done = s.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox_id, SandboxRow.state == LOST)
                .values(state=MOVING, updated_at=time.time())
            )
            s.commit()
            return s.get(SandboxRow, sandbox_id) if done.rowcount == 1 else None  # type: ignore[attr-defined]

    def moved(self, info: SandboxInfo, host: str, placement: str) -> None:
        """The sandbox now lives on ``host`` in the slot ``placement``."""
        with self._session() as s:
            s.execute(
                update(SandboxRow)
                .where(SandboxRow.id == info.id)
                .values(
                    host=host,
                    placement=placement,
                    state=info.state,
                    reason=info.reason,
                    message=None,
                    info=info.model_dump(mode="json"),
                    updated_at=time.time(),
                )
            )
            s.commit()

    def unclaim(self, sandbox_id: str) -> None:
        """A restart elsewhere failed: the sandbox is lost again, as before."""
        with self._session() as s:
            s.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox_id, SandboxRow.state == MOVING)
                .values(state=LOST, updated_at=time.time())
            )
            s.commit()

    def remove_sandbox(self, sandbox_id: str) -> None:
        with self._session() as s:
            s.execute(delete(SandboxRow).where(SandboxRow.id == sandbox_id))
            s.commit()

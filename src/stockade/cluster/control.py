"""``ClusterControl``: tenants, keys, quotas and audit for API replicas sharing PostgreSQL.

``ControlPlane`` keeps sandbox ownership in a cache loaded at start; on a replica, another
replica may have created the sandbox since. So ownership missing from the cache is read from
the store (one primary-key lookup on loopback PostgreSQL, well under a millisecond), a
tenant's usage is reloaded from the store before each of its creates, and reconciliation never
kills: a sandbox another replica is creating has its cluster row before its owner row.

A tenant's creates take turns across replicas: each holds a PostgreSQL advisory lock named
after the tenant from reloading the usage until its owner row is written, so two creates on two
replicas at the same instant cannot both pass the quota (other tenants are not held up).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from typing import AsyncIterator

from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from ..engine import SandboxUnavailable, Unsupported
from ..models import SandboxInfo, SandboxSpec
from ..server.auth import Principal
from ..server.control import ControlPlane
from ..server.store import OwnedSandbox


#: How long a create waits for its tenant's turn, and how often it tries.
TURN_WAIT = 120.0
TURN_POLL = 0.02


def _try_lock(connection: Connection, key: int) -> bool:
    locked = bool(connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
    connection.commit()
    return locked


def _unlock(connection: Connection, key: int) -> None:
    """Release the lock; a connection that cannot say so is dropped (its session, and the
    lock with it, end) rather than returned to the pool still holding it."""
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        connection.commit()
    except Exception:  # noqa: BLE001 - any failure: the session must not be reused
        connection.invalidate()


class ClusterControl(ControlPlane):
    """``ControlPlane`` whose view of ownership is the shared store's."""

    def owner(self, sandbox_id: str) -> str | None:
        row = self.owners.get(sandbox_id)
        if row is None:
            with self.store.session() as s:
                row = s.get(OwnedSandbox, sandbox_id)
            if row is None:
                return None
            self.owners[sandbox_id] = row
        return row.tenant

    async def reconcile(self) -> None:
        """Forget owner rows whose sandbox the cluster no longer has; load the rest."""
        rows = {row.id: row for row in await self.db(self.store.sandboxes)}
        live = {s.id for s in await self.engine.sandboxes.list()}
        gone = sorted(set(rows) - live)
        if gone:
            await self.db(self.store.remove_sandboxes, gone)
            for sandbox_id in gone:
                await self.db(
                    self.store.audit,
                    tenant=rows[sandbox_id].tenant,
                    actor="server",
                    action="sandbox.reaped",
                    target=sandbox_id,
                )
        self.owners = {i: row for i, row in rows.items() if i in live}

    async def _check_spec(self, principal: Principal, spec: SandboxSpec) -> None:
        if spec.volumes:
            raise Unsupported(
                "volumes are not available through a cluster replica yet (they "
                "need storage that every host mounts)"
            )
        if spec.template:  # another tenant's template reads as missing
            await self.engine.templates.get(spec.template, principal.may_see)

    async def create(self, principal: Principal, request_id: str | None, spec: SandboxSpec) -> SandboxInfo:
        """Create with the tenant's usage as the store has it (other replicas' creates too),
        one create of the tenant at a time in the whole cluster."""
        async with self._tenant_turn(principal.tenant):
            rows = await self.db(self._owned_by, principal.tenant)
            for sandbox_id, row in list(self.owners.items()):
                if row.tenant == principal.tenant:
                    del self.owners[sandbox_id]
            self.owners.update({r.id: r for r in rows})
            return await super().create(principal, request_id, spec)

    @contextlib.asynccontextmanager
    async def _tenant_turn(self, tenant: str) -> AsyncIterator[None]:
        """Hold the tenant's advisory lock (PostgreSQL; SQLite has one writer anyway). It is
        tried without blocking a thread, every :data:`TURN_POLL` s up to :data:`TURN_WAIT` s."""
        if self.store.dialect != "postgresql":
            yield
            return
        key = int.from_bytes(
            hashlib.sha256(b"stockade-quota:" + tenant.encode()).digest()[:8], "big", signed=True
        )
        connection: Connection = await asyncio.to_thread(self.store.engine.connect)
        try:
            deadline = time.monotonic() + TURN_WAIT
            while not await asyncio.to_thread(_try_lock, connection, key):
                if time.monotonic() > deadline:
                    raise SandboxUnavailable(
                        f"tenant {tenant!r} has creates waiting on other "
                        f"replicas for over {TURN_WAIT:g} s; retry"
                    )
                await asyncio.sleep(TURN_POLL)
            try:
                yield
            finally:
                await asyncio.to_thread(_unlock, connection, key)
        finally:
            await asyncio.to_thread(connection.close)

    def _owned_by(self, tenant: str) -> list[OwnedSandbox]:
        with self.store.session() as s:
            return list(s.scalars(select(OwnedSandbox).where(OwnedSandbox.tenant == tenant)))

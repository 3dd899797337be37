"""``ClusterControl``: tenants, keys, quotas and audit for API replicas sharing PostgreSQL.

``ControlPlane`` keeps sandbox ownership in a cache loaded at start; on a replica, another
replica may have created the sandbox since. So ownership missing from the cache is read from
the store (one primary-key lookup on loopback PostgreSQL, well under a millisecond), a
tenant's usage is reloaded from the store before each of its creates, and reconciliation never
kills: a sandbox another replica is creating has its cluster row before its owner row.
"""

from __future__ import annotations

from sqlalchemy import select

from ..engine import Unsupported
from ..models import SandboxInfo, SandboxSpec
from ..server.auth import Principal
from ..server.control import ControlPlane
from ..server.store import OwnedSandbox


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
                await self.db(self.store.audit, tenant=rows[sandbox_id].tenant, actor="server",
                              action="sandbox.reaped", target=sandbox_id)
        self.owners = {i: row for i, row in rows.items() if i in live}

    async def _check_spec(self, principal: Principal, spec: SandboxSpec) -> None:
        if spec.volumes:
            raise Unsupported("volumes are not available through a cluster replica yet (they "
                              "need storage that every host mounts)")
        if spec.template:  # another tenant's template reads as missing
            await self.engine.templates.get(spec.template, principal.may_see)

    async def create(self, principal: Principal, request_id: str | None,
                     spec: SandboxSpec) -> SandboxInfo:
        """Create with the tenant's usage as the store has it (other replicas' creates too)."""
        rows = await self.db(self._owned_by, principal.tenant)
        for sandbox_id, row in list(self.owners.items()):
            if row.tenant == principal.tenant:
                del self.owners[sandbox_id]
        self.owners.update({r.id: r for r in rows})
        return await super().create(principal, request_id, spec)

    def _owned_by(self, tenant: str) -> list[OwnedSandbox]:
        with self.store.session() as s:
            return list(s.scalars(select(OwnedSandbox).where(OwnedSandbox.tenant == tenant)))

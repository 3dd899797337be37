"""Tenants and their quotas (admin key), the audit log, and ``/whoami``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ...engine import NotFound
from ..control import ControlPlane
from ..deps import AdminDep, PlaneDep, PrincipalDep, RequestIdDep
from ..models import AuditPage, CreateTenant, QuotaFields, TenantInfo, TenantPage, WhoAmI
from ..store import Tenant

router = APIRouter(tags=["tenants"])


async def describe(plane: ControlPlane, tenant: Tenant) -> dict[str, Any]:
    quotas = await plane.quotas(tenant.name)
    usage = plane.usage(tenant.name)
    return {
        "name": tenant.name,
        "created_at": tenant.created_at,
        "max_sandboxes": quotas.max_sandboxes,
        "max_vcpu": quotas.max_vcpu,
        "max_memory_mb": quotas.max_memory_mb,
        "max_lifetime": quotas.max_lifetime,
        "max_disk_mb": quotas.max_disk_mb,
        "sandboxes": usage.sandboxes,
        "vcpu": usage.vcpu,
        "memory_mb": usage.memory_mb,
        "disk_mb": usage.disk_mb,
    }


@router.post("/tenants", status_code=201, response_model=TenantInfo)
async def create_tenant(
    body: CreateTenant, plane: PlaneDep, who: AdminDep, request_id: RequestIdDep
) -> dict[str, Any]:
    quotas = body.model_dump(exclude={"name"}, exclude_none=True)
    tenant, _ = await plane.db(plane.store.create_tenant, body.name, quotas)
    await plane.db(
        plane.store.audit,
        tenant=body.name,
        actor=who.actor,
        action="tenant.create",
        target=body.name,
        request_id=request_id,
        **quotas,
    )
    return await describe(plane, tenant)


@router.get("/tenants", response_model=TenantPage)
async def list_tenants(
    plane: PlaneDep,
    who: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    rows = await plane.db(plane.store.tenants)
    if cursor is not None:
        rows = [t for t in rows if t.name > cursor]
    page = rows[:limit]
    return {
        "items": [await describe(plane, t) for t in page],
        "next_cursor": page[-1].name if len(rows) > limit else None,
    }


@router.get("/tenants/{name}", response_model=TenantInfo)
async def get_tenant(name: str, plane: PlaneDep, who: PrincipalDep) -> dict[str, Any]:
    """A tenant's quotas and current usage (yours, or any with the admin key)."""
    tenant = await plane.db(plane.store.tenant, name) if who.admin or who.tenant == name else None
    if tenant is None:
        raise NotFound(f"tenant {name!r} does not exist")
    return await describe(plane, tenant)


@router.patch("/tenants/{name}", response_model=TenantInfo)
async def update_tenant(
    name: str, body: QuotaFields, plane: PlaneDep, who: AdminDep, request_id: RequestIdDep
) -> dict[str, Any]:
    """Change quotas; fields left out keep their value, null resets one to the default."""
    changes = body.model_dump(exclude_unset=True)
    tenant = await plane.db(plane.store.update_tenant, name, changes)
    plane.forget_tenant(name)
    await plane.db(
        plane.store.audit,
        tenant=name,
        actor=who.actor,
        action="tenant.update",
        target=name,
        request_id=request_id,
        **changes,
    )
    return await describe(plane, tenant)


@router.get("/audit", response_model=AuditPage)
async def audit_log(
    plane: PlaneDep,
    who: PrincipalDep,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Create, kill, expiry and key events, oldest first: your tenant's, or any with the admin
    key (all tenants when ``tenant`` is left out)."""
    if not who.admin:
        tenant = who.tenant
    rows = await plane.db(plane.store.audit_events, tenant, int(cursor or 0), limit + 1)
    page = rows[:limit]
    items = [
        {
            "id": e.id,
            "at": e.at,
            "tenant": e.tenant,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "request_id": e.request_id,
            "detail": e.detail or {},
        }
        for e in page
    ]
    return {"items": items, "next_cursor": str(page[-1].id) if len(rows) > limit else None}


@router.get("/whoami", response_model=WhoAmI)
async def whoami(who: PrincipalDep) -> dict[str, Any]:
    """The tenant and key this request was made with."""
    return {"tenant": who.tenant, "actor": who.actor, "admin": who.admin}

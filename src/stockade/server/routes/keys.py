"""API keys: create (the secret is shown once), list by prefix, revoke."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ...engine import NotFound
from ..auth import hash_key, new_key
from ..deps import PlaneDep, PrincipalDep, RequestIdDep
from ..models import CreateKey, KeyInfo, KeyPage, NewKey
from ..store import ApiKey

router = APIRouter(prefix="/keys", tags=["keys"])


def describe(key: ApiKey, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    state = (
        "revoked"
        if key.revoked_at is not None
        else "expired"
        if key.expires_at is not None and key.expires_at <= now
        else "active"
    )
    return {
        "id": key.id,
        "tenant": key.tenant,
        "name": key.name,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "state": state,
    }


@router.post("", status_code=201, response_model=NewKey)
async def create_key(
    body: CreateKey, plane: PlaneDep, who: PrincipalDep, request_id: RequestIdDep
) -> dict[str, Any]:
    """Create a key for ``tenant`` (the admin key; the tenant is created if new) or for your
    own tenant. The response is the only time the secret is shown."""
    tenant = body.tenant or who.tenant
    if not who.admin and tenant != who.tenant:
        raise NotFound(f"tenant {tenant!r} does not exist")
    created = False
    if who.admin:
        _, created = await plane.db(plane.store.create_tenant, tenant, exist_ok=True)
    if created:
        await plane.db(
            plane.store.audit,
            tenant=tenant,
            actor=who.actor,
            action="tenant.create",
            target=tenant,
            request_id=request_id,
        )
    key_id, secret = new_key(body.style)
    now = time.time()
    row = ApiKey(
        id=key_id,
        tenant=tenant,
        sha256=hash_key(secret),
        name=body.name,
        created_at=now,
        expires_at=now + body.expires_in if body.expires_in else None,
    )
    await plane.db(plane.store.add_key, row)
    await plane.db(
        plane.store.audit,
        tenant=tenant,
        actor=who.actor,
        action="key.create",
        target=key_id,
        request_id=request_id,
        expires_at=row.expires_at,
    )
    return {**describe(row, now), "key": secret}


@router.get("", response_model=KeyPage)
async def list_keys(
    plane: PlaneDep,
    who: PrincipalDep,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Keys by id (prefix) only: yours, or any tenant's with the admin key."""
    if not who.admin:
        tenant = who.tenant
    rows = sorted(await plane.db(plane.store.keys, tenant), key=lambda k: k.id)
    if cursor is not None:
        rows = [k for k in rows if k.id > cursor]
    page = rows[:limit]
    now = time.time()
    return {
        "items": [describe(k, now) for k in page],
        "next_cursor": page[-1].id if len(rows) > limit else None,
    }


@router.delete("/{key_id}", response_model=KeyInfo)
async def revoke_key(
    key_id: str, plane: PlaneDep, who: PrincipalDep, request_id: RequestIdDep
) -> dict[str, Any]:
    """Revoke a key at once; requests with it then answer 401."""
    row = await plane.db(plane.store.revoke_key, key_id, None if who.admin else who.tenant)
    plane.keys.forget(key_id)
    await plane.db(
        plane.store.audit,
        tenant=row.tenant,
        actor=who.actor,
        action="key.revoke",
        target=key_id,
        request_id=request_id,
    )
    return describe(row)

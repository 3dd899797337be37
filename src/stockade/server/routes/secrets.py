"""Secrets (``eng.secrets``, docs/secrets.md): a tenant's values for the egress proxy to inject.

Each tenant sees, uses and deletes only its own (the admin key too: secrets are never shared).
No route returns a value; the audit trail records the name and hosts.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..deps import ControlDep, EngineDep, PrincipalDep, RequestIdDep
from ...models import CreateSecret, SecretInfo, SecretPage

router = APIRouter(prefix="/secrets", tags=["secrets"])


@router.post("", status_code=201, response_model=SecretInfo)
async def create_secret(
    body: CreateSecret, eng: EngineDep, control: ControlDep, who: PrincipalDep, request_id: RequestIdDep
) -> SecretInfo:
    """Create a secret, or replace one of the same name (its value is never returned)."""
    info = await eng.secrets.create(who.tenant, body)
    await control.record(who, request_id, "secret.set", body.name, hosts=info.hosts)
    return info


@router.get("", response_model=SecretPage)
async def list_secrets(eng: EngineDep, who: PrincipalDep) -> SecretPage:
    """Names, bound hosts and times of the caller's secrets."""
    return await eng.secrets.list(who.tenant)


@router.get("/{name}", response_model=SecretInfo)
async def get_secret(name: str, eng: EngineDep, who: PrincipalDep) -> SecretInfo:
    return await eng.secrets.get(who.tenant, name)


@router.delete("/{name}", status_code=204)
async def delete_secret(
    name: str, eng: EngineDep, control: ControlDep, who: PrincipalDep, request_id: RequestIdDep
) -> Response:
    """Delete a secret; sandboxes holding its placeholder stop getting its value."""
    await eng.secrets.delete(who.tenant, name)
    await control.record(who, request_id, "secret.delete", name)
    return Response(status_code=204)

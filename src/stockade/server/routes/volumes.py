"""Volumes: named, size-limited disks that outlive sandboxes (engine/volumes.py).

Each volume records the tenant that created it; a tenant sees and deletes only its own (the
admin key sees all).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from ...engine import NotFound
from ..deps import EngineDep, PrincipalDep
from ..models import CreateVolume, Volume, VolumePage

router = APIRouter(prefix="/volumes", tags=["volumes"])


def volume_info(eng: Any, who: Any, name: str) -> dict[str, Any]:
    """Volume ``name`` if ``who`` may see it; NotFound otherwise, as for a missing one."""
    info: dict[str, Any] = eng.volumes.get(name)
    if not who.may_see(info.get("owner")):
        raise NotFound(f"no volume {name!r}; create it first (Volume.create)")
    return {**info, "mounted_by": eng.volume_users(name)}


@router.post("", status_code=201, response_model=Volume)
async def create_volume(body: CreateVolume, eng: EngineDep, who: PrincipalDep) -> dict[str, Any]:
    """Create an empty volume of ``size_mb`` (its hard limit)."""
    info = await eng.volumes.create(body.name, body.size_mb, owner=who.tenant)
    return {**info, "mounted_by": []}


@router.get("", response_model=VolumePage)
async def list_volumes(eng: EngineDep, who: PrincipalDep) -> dict[str, Any]:
    items = [{**v, "mounted_by": eng.volume_users(v["name"])} for v in eng.volumes.list()
             if who.may_see(v.get("owner"))]
    return {"items": items, "next_cursor": None}


@router.get("/{name}", response_model=Volume)
async def get_volume(name: str, eng: EngineDep, who: PrincipalDep) -> dict[str, Any]:
    return volume_info(eng, who, name)


@router.delete("/{name}", status_code=204)
async def delete_volume(name: str, eng: EngineDep, who: PrincipalDep) -> Response:
    """Delete a volume and its data (409 while a sandbox, in any state, mounts it)."""
    volume_info(eng, who, name)
    await eng.volumes.delete(name, eng.volume_users(name))
    return Response(status_code=204)

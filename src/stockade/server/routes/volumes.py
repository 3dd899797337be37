"""Volumes: named, size-limited disks that outlive sandboxes (``eng.volumes``).

Each volume records the tenant that created it; a tenant sees and deletes only its own (the
admin key sees all).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..deps import ControlDep, EngineDep, PrincipalDep
from ..models import CreateVolume, VolumeInfo, VolumePage

router = APIRouter(prefix="/volumes", tags=["volumes"])


@router.post("", status_code=201, response_model=VolumeInfo)
async def create_volume(body: CreateVolume, eng: EngineDep, who: PrincipalDep) -> VolumeInfo:
    """Create an empty volume of ``size_mb`` (its hard limit)."""
    return await eng.volumes.create(body.name, body.size_mb, owner=who.tenant)


@router.get("", response_model=VolumePage)
async def list_volumes(eng: EngineDep, who: PrincipalDep) -> VolumePage:
    items = [v for v in await eng.volumes.list() if who.may_see(v.owner)]
    return VolumePage(items=items, next_cursor=None)


@router.get("/{name}", response_model=VolumeInfo)
async def get_volume(name: str, control: ControlDep, who: PrincipalDep) -> VolumeInfo:
    return await control.volume(who, name)


@router.delete("/{name}", status_code=204)
async def delete_volume(name: str, eng: EngineDep, control: ControlDep, who: PrincipalDep) -> Response:
    """Delete a volume and its data (409 while a sandbox, in any state, mounts it)."""
    await control.volume(who, name)
    await eng.volumes.delete(name)
    return Response(status_code=204)

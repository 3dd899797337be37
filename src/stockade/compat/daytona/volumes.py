"""``/daytona/api/volumes``: Daytona volumes are Stockade volumes (a volume's id is its name)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from ...engine import NotFound
from ...models import VolumeInfo
from . import render
from ._base import API, ControlDep, DaytonaError, DaytonaRoute, PrincipalDep
from .wire import CreateVolume

router = APIRouter(prefix=API + "/volumes", route_class=DaytonaRoute, tags=["daytona"])


async def _get(ctl: ControlDep, who: PrincipalDep, name: str) -> VolumeInfo:
    try:
        return await ctl.volume(who, name)
    except NotFound:
        raise DaytonaError(404, f"Volume {name} not found") from None


@router.get("")
async def list_volumes(
    ctl: ControlDep, who: PrincipalDep, includeDeleted: bool = False
) -> list[dict[str, Any]]:  # noqa: N803
    return [render.volume(v, who.tenant) for v in await ctl.engine.volumes.list() if who.may_see(v.owner)]


@router.post("")
async def create_volume(body: CreateVolume, ctl: ControlDep, who: PrincipalDep) -> dict[str, Any]:
    """A new, empty volume of the server's default size, ready at once."""
    return render.volume(await ctl.engine.volumes.create(body.name, owner=who.tenant), who.tenant)


@router.get("/by-name/{name}")
async def volume_by_name(name: str, ctl: ControlDep, who: PrincipalDep) -> dict[str, Any]:
    return render.volume(await _get(ctl, who, name), who.tenant)


@router.get("/{volumeId}")
async def get_volume(volumeId: str, ctl: ControlDep, who: PrincipalDep) -> dict[str, Any]:  # noqa: N803
    return render.volume(await _get(ctl, who, volumeId), who.tenant)


@router.delete("/{volumeId}")
async def delete_volume(volumeId: str, ctl: ControlDep, who: PrincipalDep) -> Response:  # noqa: N803
    """Delete the volume and its data (409 while a sandbox, in any state, mounts it)."""
    await _get(ctl, who, volumeId)
    await ctl.engine.volumes.delete(volumeId)
    return Response(status_code=200)

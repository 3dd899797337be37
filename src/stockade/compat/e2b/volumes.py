"""E2B's volumes (``Volume.create``, ``get_info``, ``list``, ``destroy``) onto Stockade's
volumes of the caller's tenant; the volume ID is its name. A sandbox mounts them with
``Sandbox.create(volume_mounts={path: volume})``. E2B's volume content API (``read_file``,
``write_file``, ``list``, ``make_dir``, ``remove``, ``update_metadata`` on a volume outside a
sandbox) is served on another host by E2B and is not offered here; mount the volume in a
sandbox and use ``sandbox.files``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from ...models import VolumeInfo
from ...server.auth import Principal
from . import gate
from .wire import Loose

router = APIRouter(prefix="/e2b")
Who = Annotated[Principal, Depends(gate.principal)]


class NewVolume(Loose):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")


def _volume(request: Request, info: VolumeInfo) -> dict[str, Any]:
    """``VolumeAndToken``; the token is only a placeholder (no content API is served)."""
    return {"volumeID": info.name, "name": info.name, "token": gate.volume_token(request, info.name)}


@router.post("/volumes", status_code=201)
async def create_volume(request: Request, who: Who, body: NewVolume) -> JSONResponse:
    info = await gate.engine(request).volumes.create(body.name, owner=who.tenant)
    return JSONResponse(_volume(request, info), status_code=201)


@router.get("/volumes")
async def list_volumes(request: Request, who: Who) -> list[dict[str, Any]]:
    return [
        {"volumeID": v.name, "name": v.name}
        for v in await gate.engine(request).volumes.list()
        if who.may_see(v.owner)
    ]


@router.get("/volumes/{volume_id}")
async def get_volume(request: Request, who: Who, volume_id: str) -> dict[str, Any]:
    return _volume(request, await gate.control(request).volume(who, volume_id))


@router.delete("/volumes/{volume_id}", status_code=204)
async def delete_volume(request: Request, who: Who, volume_id: str) -> Response:
    """Delete the volume and its data (409 while a sandbox mounts it)."""
    await gate.control(request).volume(who, volume_id)
    await gate.engine(request).volumes.delete(volume_id)
    return Response(status_code=204)

"""``/daytona/api/snapshots``: Daytona snapshots are Stockade templates (create, list, get,
activate, delete). A create builds the template while the request waits, so it answers
``active`` (or the build's error) and the SDK never needs build logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from ...engine import NotFound
from ...models import TemplateInfo
from ...server.auth import Principal
from ...server.control import Control
from . import render
from ._base import API, ControlDep, DaytonaError, DaytonaRoute, PrincipalDep
from .builds import build, dockerfile_of
from .wire import CreateSnapshot

router = APIRouter(prefix=API + "/snapshots", route_class=DaytonaRoute, tags=["daytona"])


async def _find(ctl: Control, who: Principal, name: str) -> TemplateInfo:
    try:
        return await ctl.engine.templates.get(name, who.may_see)
    except NotFound:
        raise DaytonaError(404, f"Snapshot {name} not found") from None


def _dockerfile(body: CreateSnapshot) -> str:
    """The Dockerfile to build: the SDK's rendering of an ``Image``, or FROM a template name."""
    if any(v is not None for v in (body.cpu, body.gpu, body.memory, body.disk)):
        raise DaytonaError(
            400,
            "a snapshot has no resources here: give cpu, memory and disk to "
            "the sandbox create instead (leave resources unset)",
        )
    if body.build_info is not None:
        return dockerfile_of(body.build_info)
    if body.image_name is None:
        raise DaytonaError(400, "give an image: a Stockade template name or an Image")
    if body.entrypoint:
        raise DaytonaError(
            400, "snapshot entrypoints are not supported: sandboxes start idle (leave entrypoint unset)"
        )
    return f"FROM {body.image_name}\n"


@router.post("")
async def create_snapshot(body: CreateSnapshot, ctl: ControlDep, who: PrincipalDep) -> dict[str, Any]:
    """Build the snapshot (a template of the caller's tenant) and answer it ``active``."""
    template = await build(ctl, who, _dockerfile(body), body.name)
    return render.snapshot(template, ctl.engine.config.default_resources)


@router.get("")
async def list_snapshots(
    ctl: ControlDep,
    who: PrincipalDep,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    name: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    """The templates the caller may use (shared ones and its own), paginated from page 1."""
    defaults = ctl.engine.config.default_resources
    items = [
        render.snapshot(t, defaults)
        for t in await ctl.engine.templates.list(who.may_see)
        if name is None or name in t.name
    ]
    total = len(items)
    return {
        "items": items[(page - 1) * limit : page * limit],
        "total": total,
        "page": page,
        "totalPages": max(1, -(-total // limit)),
    }


@router.get("/{snapshotIdOrName}")
@router.post("/{snapshotIdOrName}/activate")
async def get_snapshot(
    snapshotIdOrName: str,
    ctl: ControlDep,  # noqa: N803
    who: PrincipalDep,
) -> dict[str, Any]:
    """The snapshot (``activate`` answers it too: templates never go inactive here)."""
    return render.snapshot(await _find(ctl, who, snapshotIdOrName), ctl.engine.config.default_resources)


@router.delete("/{snapshotIdOrName}")
async def delete_snapshot(
    snapshotIdOrName: str,
    ctl: ControlDep,  # noqa: N803
    who: PrincipalDep,
) -> Response:
    """Delete the caller's own snapshot (403 for a shared one; 409 while a sandbox uses it)."""
    template = await _find(ctl, who, snapshotIdOrName)
    if template.owner is None and not who.admin:
        raise DaytonaError(
            403,
            f"Snapshot {template.name} is shared by the server's operator; only the operator can delete it",
        )
    await ctl.engine.templates.delete(template.name)
    return Response(status_code=200)

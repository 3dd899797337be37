"""``/daytona/api/snapshots``: Daytona snapshots are Stockade templates (list and get)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ...engine import NotFound
from . import render
from ._base import API, ControlDep, DaytonaError, DaytonaRoute, PrincipalDep

router = APIRouter(prefix=API + "/snapshots", route_class=DaytonaRoute, tags=["daytona"])


@router.get("")
async def list_snapshots(
    ctl: ControlDep, who: PrincipalDep,
    page: Annotated[int, Query(ge=1)] = 1, limit: Annotated[int, Query(ge=1, le=200)] = 100,
    name: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    """The templates the caller may use (shared ones and its own), paginated from page 1."""
    defaults = ctl.engine.config.default_resources
    items = [render.snapshot(t, defaults) for t in await ctl.engine.templates.list(who.may_see)
             if name is None or name in t.name]
    total = len(items)
    return {"items": items[(page - 1) * limit:page * limit], "total": total, "page": page,
            "totalPages": max(1, -(-total // limit))}


@router.get("/{snapshotIdOrName}")
async def get_snapshot(snapshotIdOrName: str, ctl: ControlDep,  # noqa: N803
                       who: PrincipalDep) -> dict[str, Any]:
    try:
        template = await ctl.engine.templates.get(snapshotIdOrName, who.may_see)
    except NotFound:
        raise DaytonaError(404, f"Snapshot {snapshotIdOrName} not found") from None
    return render.snapshot(template, ctl.engine.config.default_resources)

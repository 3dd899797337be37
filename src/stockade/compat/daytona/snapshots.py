"""``/daytona/api/snapshots``: Daytona snapshots are Stockade templates (list and get)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ...engine import NotFound
from ...engine.template_build import template_json
from ...server.routes.templates import may_use, visible_template
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
    infos = await asyncio.to_thread(ctl.engine.images.list)
    defaults = ctl.engine.config.default_resources
    items = [render.snapshot(template_json(i), defaults) for i in infos
             if not i.hidden and may_use(who, i) and (name is None or name in i.name)]
    total = len(items)
    return {"items": items[(page - 1) * limit:page * limit], "total": total, "page": page,
            "totalPages": max(1, -(-total // limit))}


@router.get("/{snapshotIdOrName}")
async def get_snapshot(snapshotIdOrName: str, ctl: ControlDep,  # noqa: N803
                       who: PrincipalDep) -> dict[str, Any]:
    try:
        info = visible_template(ctl.engine, who, snapshotIdOrName)
    except NotFound:
        raise DaytonaError(404, f"Snapshot {snapshotIdOrName} not found") from None
    return render.snapshot(template_json(info), ctl.engine.config.default_resources)

"""E2B snapshots onto Stockade's: a snapshot is a template made from a sandbox's files, owned
by the caller's tenant; its ``snapshotID`` is the template name, so ``Sandbox.create(id)``
starts from it. Memory is not kept (E2B's ``memory`` flag is ignored)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from ...models import TemplateInfo
from ...server.auth import Principal
from . import gate
from .gate import E2BError
from .wire import Loose

router = APIRouter(prefix="/e2b")
Who = Annotated[Principal, Depends(gate.principal)]
SOURCE = "snapshot of sandbox "


class NewSnapshot(Loose):
    name: str | None = Field(default=None, max_length=63)


def _info(template: TemplateInfo) -> dict[str, Any]:
    return {"snapshotID": template.name, "names": [template.name]}


@router.post("/sandboxes/{sandbox_id}/snapshots", status_code=201)
async def create_snapshot(request: Request, who: Who, sandbox_id: str, body: NewSnapshot) -> JSONResponse:
    """Save the sandbox's files as a template of the caller's tenant."""
    owned = gate.owned(request, who, sandbox_id)
    name = body.name or f"snapshot-{owned}-{secrets.token_hex(3)}"
    made = await gate.engine(request).sandboxes.snapshot(owned, name, owner=who.tenant)
    return JSONResponse(_info(made), status_code=201)


@router.get("/snapshots")
async def list_snapshots(
    request: Request,
    response: Response,
    who: Who,
    sandbox_id: Annotated[str | None, Query(alias="sandboxID", max_length=64)] = None,
    name: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    next_token: Annotated[str | None, Query(alias="nextToken", max_length=64)] = None,
) -> list[dict[str, Any]]:
    """The caller's snapshots, oldest first, paged like the sandbox list."""
    found = sorted(
        (
            t
            for t in await gate.engine(request).templates.list(who.may_see)
            if (t.source or "").startswith(SOURCE)
            and (sandbox_id is None or t.source == SOURCE + sandbox_id)
            and name in (None, t.name)
        ),
        key=lambda t: (t.created, t.name),
    )
    if next_token:
        found = [t for t in found if (t.created, t.name) > _position(next_token, found)]
    page = found[:limit]
    if len(found) > limit:
        response.headers["X-Next-Token"] = page[-1].name
    return [_info(t) for t in page]


def _position(token: str, found: list[TemplateInfo]) -> tuple[str, str]:
    for template in found:
        if template.name == token:
            return template.created, template.name
    raise E2BError(400, "nextToken is not a token this server handed out (or that snapshot was deleted)")

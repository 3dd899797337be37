"""E2B's template routes that map onto Stockade's templates: alias lookup and delete (which
the SDK also uses to delete snapshots). Templates are per tenant; shared ones have no owner."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from ...server.auth import Principal
from . import gate, wire
from .gate import E2BError

router = APIRouter(prefix="/e2b")
Who = Annotated[Principal, Depends(gate.principal)]


@router.get("/templates/aliases/{alias}")
async def alias(request: Request, who: Who, alias: str) -> dict[str, Any]:
    """The template an alias names, if the caller may use it (404 otherwise)."""
    name = wire.TEMPLATE_ALIASES.get(alias, alias)
    info = await gate.engine(request).templates.get(name, who.may_see)
    return {"templateID": info.name, "public": info.owner is None}


@router.delete("/templates/{template_id}", status_code=204)
async def delete_snapshot(request: Request, who: Who, template_id: str) -> Response:
    """Delete a snapshot (or another template) of the caller's tenant; 404 if it is not
    theirs, 403 for a template the operator shares."""
    templates = gate.engine(request).templates
    info = await templates.get(template_id, who.may_see)
    if info.owner is None and not who.admin:
        raise E2BError(
            403,
            f"template {template_id!r} is shared by the operator; it cannot be deleted with a tenant's key",
        )
    await templates.delete(template_id)
    return Response(status_code=204)

"""Sandboxes: create, get, list, kill, set timeout, stats."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from ...engine import Engine
from ..deps import engine
from ..models import CreateSandbox, Sandbox, SandboxPage, SetTimeout

router = APIRouter(prefix="/sandboxes", tags=["sandboxes"])
EngineDep = Annotated[Engine, Depends(engine)]


@router.post("", status_code=201, response_model=Sandbox)
async def create_sandbox(body: CreateSandbox, eng: EngineDep) -> dict[str, Any]:
    return await eng.create(**body.model_dump())


@router.get("", response_model=SandboxPage)
async def list_sandboxes(
    eng: EngineDep,
    state: str | None = None,
    metadata: Annotated[list[str], Query(description="key=value; repeat to AND")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    wanted = {}
    for pair in metadata:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"metadata filter {pair!r} must look like key=value")
        wanted[key] = value
    items = [s for s in await eng.list()
             if (state is None or s["state"] == state)
             and all(s["metadata"].get(k) == v for k, v in wanted.items())]
    if cursor is not None:
        items = [s for s in items if s["id"] > cursor]
    items.sort(key=lambda s: s["id"])
    page = items[:limit]
    more = len(items) > limit
    return {"items": page, "next_cursor": page[-1]["id"] if more else None}


@router.get("/{sandbox_id}", response_model=Sandbox)
async def get_sandbox(sandbox_id: str, eng: EngineDep) -> dict[str, Any]:
    return await eng.get(sandbox_id)


@router.delete("/{sandbox_id}", status_code=204)
async def kill_sandbox(sandbox_id: str, eng: EngineDep) -> Response:
    await eng.kill(sandbox_id)
    return Response(status_code=204)


@router.post("/{sandbox_id}/timeout", response_model=Sandbox)
async def set_timeout(sandbox_id: str, body: SetTimeout, eng: EngineDep) -> dict[str, Any]:
    return await eng.set_timeout(sandbox_id, body.timeout)


@router.get("/{sandbox_id}/stats")
async def sandbox_stats(sandbox_id: str, eng: EngineDep) -> dict[str, Any]:
    return await eng.stats(sandbox_id)

"""Sandboxes: create, get, list, kill, set timeout, stats.

Ownership is checked before any of these run (see ``auth.AuthMiddleware``); creates, kills and
timeouts go through the control layer for quotas and the audit log.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from ...engine.snapshots import snapshot
from ..deps import ControlDep, EngineDep, PrincipalDep, RequestIdDep
from ..models import CreateSandbox, NetworkPolicy, Sandbox, SandboxPage, SetTimeout
from ..models import CreateSnapshot, TemplateInfo
from .templates import usable_template
from .volumes import volume_info

router = APIRouter(prefix="/sandboxes", tags=["sandboxes"])


@router.post("", status_code=201, response_model=Sandbox)
async def create_sandbox(body: CreateSandbox, control: ControlDep, who: PrincipalDep,
                         request_id: RequestIdDep) -> dict[str, Any]:
    """Create a sandbox and return it running (429 if it would pass a quota)."""
    params = body.model_dump()
    for spec in params["volumes"].values():  # another tenant's volume reads as missing
        name = spec if isinstance(spec, str) else spec["volume"]
        volume_info(control.engine, who, name)
    if params.get("template"):  # so does another tenant's template
        usable_template(control.engine, who, params["template"])
    return await control.create(who, request_id, **params)


@router.get("", response_model=SandboxPage)
async def list_sandboxes(
    eng: EngineDep,
    control: ControlDep,
    who: PrincipalDep,
    state: Annotated[str | None, Query(max_length=32)] = None,
    metadata: Annotated[list[str], Query(description="key=value; repeat to AND")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Your sandboxes (every tenant's with the admin key), by id, filtered."""
    wanted = {}
    for pair in metadata:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"metadata filter {pair!r} must look like key=value")
        wanted[key] = value
    items = [s for s in control.visible(who, await eng.list())
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
async def kill_sandbox(sandbox_id: str, control: ControlDep, who: PrincipalDep,
                       request_id: RequestIdDep) -> Response:
    await control.kill(who, sandbox_id, request_id)
    return Response(status_code=204)


@router.post("/{sandbox_id}/timeout", response_model=Sandbox)
async def set_timeout(sandbox_id: str, body: SetTimeout, control: ControlDep, who: PrincipalDep,
                      request_id: RequestIdDep) -> dict[str, Any]:
    """Kill the sandbox ``timeout`` seconds from now (429 past the tenant's maximum lifetime)."""
    return await control.set_timeout(who, sandbox_id, body.timeout, request_id)


@router.post("/{sandbox_id}/network", response_model=Sandbox)
async def set_network(sandbox_id: str, body: NetworkPolicy, eng: EngineDep) -> dict[str, Any]:
    """Replace the egress policy of a sandbox created with one; new connections follow it."""
    return await eng.set_network(sandbox_id, body.model_dump())


@router.get("/{sandbox_id}/stats")
async def sandbox_stats(sandbox_id: str, eng: EngineDep) -> dict[str, Any]:
    return await eng.stats(sandbox_id)


# -- lifecycle (docs/persistence.md): 409 for a transition the current state does not allow --
@router.post("/{sandbox_id}/pause", response_model=Sandbox)
async def pause_sandbox(sandbox_id: str, eng: EngineDep) -> dict[str, Any]:
    """Save processes and memory (gVisor: to disk; container: frozen in RAM)."""
    return await eng.lifecycle.pause(sandbox_id)


@router.post("/{sandbox_id}/resume", response_model=Sandbox)
async def resume_sandbox(sandbox_id: str, eng: EngineDep) -> dict[str, Any]:
    """Bring a paused sandbox back where it was (409 ``checkpoint_corrupt`` if its saved
    memory is damaged: it is then stopped, files kept)."""
    return await eng.lifecycle.resume(sandbox_id)


@router.post("/{sandbox_id}/connect", response_model=Sandbox)
async def connect_sandbox(sandbox_id: str, eng: EngineDep, control: ControlDep,
                          who: PrincipalDep) -> dict[str, Any]:
    """Make the sandbox usable: resume it if paused, start it if stopped or archived (429 if
    restoring an archive would pass the tenant's disk quota)."""
    await control.check_start(who, sandbox_id)
    return await eng.lifecycle.connect(sandbox_id)


@router.post("/{sandbox_id}/stop", response_model=Sandbox)
async def stop_sandbox(sandbox_id: str, eng: EngineDep) -> dict[str, Any]:
    """Stop every process, keep the files (persistence="workspace" only)."""
    return await eng.lifecycle.stop(sandbox_id)


@router.post("/{sandbox_id}/start", response_model=Sandbox)
async def start_sandbox(sandbox_id: str, eng: EngineDep, control: ControlDep,
                        who: PrincipalDep) -> dict[str, Any]:
    """Boot a stopped (or archived: restored first) sandbox again on its kept files, with the
    same id."""
    await control.check_start(who, sandbox_id)
    return await eng.lifecycle.start(sandbox_id)


@router.post("/{sandbox_id}/archive", response_model=Sandbox)
async def archive_sandbox(sandbox_id: str, eng: EngineDep) -> dict[str, Any]:
    """Compress a stopped workspace's files to free disk; start or connect restores them (409
    ``archive_corrupt`` there if the archive is damaged: the sandbox stays archived)."""
    return await eng.lifecycle.archive(sandbox_id)


@router.post("/{sandbox_id}/snapshot", status_code=201, response_model=TemplateInfo)
async def snapshot_sandbox(sandbox_id: str, body: CreateSnapshot, eng: EngineDep,
                           who: PrincipalDep) -> dict[str, Any]:
    """Save the sandbox's filesystem as a new template (layers shared with its template),
    owned by your tenant."""
    return await snapshot(eng, sandbox_id, body.name, owner=who.tenant)

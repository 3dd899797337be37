"""Sandboxes: create, get, list, kill, set timeout, resize, network, egress log, stats, lifecycle,
snapshot.

Ownership is checked before any of these run (see ``auth.AuthMiddleware``); creates, kills,
timeouts and starts go through the control layer for quotas and the audit log. Each handler
is one call on the engine interface (``eng.sandboxes``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ...engine import InvalidRequest
from ..deps import ControlDep, EngineDep, PrincipalDep, RequestIdDep
from ..models import (
    CreateSnapshot,
    EgressLog,
    ForkResult,
    ForkSpec,
    NetworkPolicy,
    ResizeSpec,
    SandboxEnd,
    SandboxInfo,
    SandboxPage,
    SandboxSpec,
    SandboxStats,
    SetTimeout,
    TemplateInfo,
    UsageHistory,
)

router = APIRouter(prefix="/sandboxes", tags=["sandboxes"])


@router.post("", status_code=201, response_model=SandboxInfo)
async def create_sandbox(
    body: SandboxSpec, control: ControlDep, who: PrincipalDep, request_id: RequestIdDep
) -> SandboxInfo:
    """Create a sandbox and return it running (429 if it would pass a quota)."""
    return await control.create(who, request_id, body)


@router.get("", response_model=SandboxPage)
async def list_sandboxes(
    eng: EngineDep,
    control: ControlDep,
    who: PrincipalDep,
    state: Annotated[str | None, Query(max_length=32)] = None,
    metadata: Annotated[list[str], Query(description="key=value; repeat to AND")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> SandboxPage:
    """Your sandboxes (every tenant's with the admin key), by id, filtered."""
    wanted = {}
    for pair in metadata:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidRequest(f"metadata filter {pair!r} must look like key=value")
        wanted[key] = value
    items = [
        s
        for s in control.visible(who, await eng.sandboxes.list())
        if (state is None or s.state == state)
        and all(s.metadata.get(k) == v for k, v in wanted.items())
        and (cursor is None or s.id > cursor)
    ]
    items.sort(key=lambda s: s.id)
    page = items[:limit]
    more = len(items) > limit
    return SandboxPage(items=page, next_cursor=page[-1].id if more else None)


@router.get("/{sandbox_id}", response_model=SandboxInfo)
async def get_sandbox(sandbox_id: str, eng: EngineDep) -> SandboxInfo:
    """The sandbox in any state; 404 once it ended (``GET /sandboxes/{id}/end`` says why)."""
    return await eng.sandboxes.get(sandbox_id)


@router.get("/{sandbox_id}/end", response_model=SandboxEnd)
async def sandbox_end(sandbox_id: str, eng: EngineDep) -> SandboxEnd:
    """Why a sandbox that ended ended (killed, timeout, out_of_memory, pids_limit, disk_full,
    host_lost, error), with the words and the sandbox as it was; kept for a bounded time, for
    its owner only (409 while the sandbox exists; docs/persistence.md)."""
    return await eng.sandboxes.end(sandbox_id)


@router.get("/{sandbox_id}/usage", response_model=UsageHistory)
async def sandbox_usage(sandbox_id: str, eng: EngineDep) -> UsageHistory:
    """The sandbox's recent CPU, memory, disk and network use, oldest first, one sample every
    ``interval`` seconds (for charts)."""
    return await eng.sandboxes.usage(sandbox_id)


@router.delete("/{sandbox_id}", status_code=204)
async def kill_sandbox(
    sandbox_id: str, control: ControlDep, who: PrincipalDep, request_id: RequestIdDep
) -> Response:
    await control.kill(who, sandbox_id, request_id)
    return Response(status_code=204)


@router.post("/{sandbox_id}/timeout", response_model=SandboxInfo)
async def set_timeout(
    sandbox_id: str, body: SetTimeout, control: ControlDep, who: PrincipalDep, request_id: RequestIdDep
) -> SandboxInfo:
    """Kill the sandbox ``timeout`` seconds from now (429 past the tenant's maximum lifetime)."""
    return await control.set_timeout(who, sandbox_id, body.timeout, request_id)


@router.post("/{sandbox_id}/resize", response_model=SandboxInfo)
async def resize(
    sandbox_id: str, body: ResizeSpec, control: ControlDep, who: PrincipalDep, request_id: RequestIdDep
) -> SandboxInfo:
    """Change CPU and memory: at once while running (only upward, 409 ``unsupported`` on a tier
    without ``hot_resize``), for the next start while stopped; 429 past the tenant's quotas."""
    return await control.resize(who, sandbox_id, body, request_id)


@router.post("/{sandbox_id}/network", response_model=SandboxInfo)
async def set_network(sandbox_id: str, body: NetworkPolicy, eng: EngineDep) -> SandboxInfo:
    """Replace the egress policy of a sandbox created with one; new connections follow it."""
    return await eng.sandboxes.set_network(sandbox_id, body)


@router.get("/{sandbox_id}/egress", response_model=EgressLog)
async def egress_log(
    sandbox_id: str, eng: EngineDep, limit: Annotated[int, Query(ge=1, le=10000)] = 1000
) -> EgressLog:
    """The newest ``limit`` entries of the sandbox's egress log, oldest first: connections
    through the egress proxy (allowed or denied, why, bytes each way) and refused DNS questions."""
    return await eng.sandboxes.egress(sandbox_id, limit)


@router.get("/{sandbox_id}/stats", response_model=SandboxStats)
async def sandbox_stats(sandbox_id: str, eng: EngineDep) -> SandboxStats:
    return await eng.sandboxes.stats(sandbox_id)


# -- lifecycle (docs/persistence.md): 409 for a transition the current state does not allow --
@router.post("/{sandbox_id}/pause", response_model=SandboxInfo)
async def pause_sandbox(sandbox_id: str, eng: EngineDep) -> SandboxInfo:
    """Save processes and memory (gVisor: to disk; container: frozen in RAM)."""
    return await eng.sandboxes.pause(sandbox_id)


@router.post("/{sandbox_id}/resume", response_model=SandboxInfo)
async def resume_sandbox(sandbox_id: str, eng: EngineDep) -> SandboxInfo:
    """Bring a paused sandbox back where it was (409 ``checkpoint_corrupt`` if its saved
    memory is damaged: it is then stopped, files kept)."""
    return await eng.sandboxes.resume(sandbox_id)


@router.post("/{sandbox_id}/connect", response_model=SandboxInfo)
async def connect_sandbox(sandbox_id: str, control: ControlDep, who: PrincipalDep) -> SandboxInfo:
    """Make the sandbox usable: resume it if paused, start it if stopped or archived (429 if
    restoring an archive would pass the tenant's disk quota)."""
    return await control.connect_sandbox(who, sandbox_id)


@router.post("/{sandbox_id}/stop", response_model=SandboxInfo)
async def stop_sandbox(sandbox_id: str, eng: EngineDep) -> SandboxInfo:
    """Stop every process, keep the files (persistence="workspace" only)."""
    return await eng.sandboxes.stop(sandbox_id)


@router.post("/{sandbox_id}/start", response_model=SandboxInfo)
async def start_sandbox(sandbox_id: str, control: ControlDep, who: PrincipalDep) -> SandboxInfo:
    """Boot a stopped (or archived: restored first) sandbox again on its kept files, with the
    same id."""
    return await control.start_sandbox(who, sandbox_id)


@router.post("/{sandbox_id}/archive", response_model=SandboxInfo)
async def archive_sandbox(sandbox_id: str, eng: EngineDep) -> SandboxInfo:
    """Compress a stopped workspace's files to free disk; start or connect restores them (409
    ``archive_corrupt`` there if the archive is damaged: the sandbox stays archived)."""
    return await eng.sandboxes.archive(sandbox_id)


@router.post("/{sandbox_id}/snapshot", status_code=201, response_model=TemplateInfo)
async def snapshot_sandbox(
    sandbox_id: str, body: CreateSnapshot, eng: EngineDep, who: PrincipalDep
) -> TemplateInfo:
    """Save the sandbox's filesystem as a new template (layers shared with its template),
    owned by your tenant."""
    return await eng.sandboxes.snapshot(sandbox_id, body.name, owner=who.tenant)


@router.post("/{sandbox_id}/fork", status_code=201, response_model=ForkResult)
async def fork_sandbox(
    sandbox_id: str, body: ForkSpec, control: ControlDep, who: PrincipalDep, request_id: RequestIdDep
) -> ForkResult:
    """``count`` (1 to 16) running copies of a running or paused sandbox (docs/fork.md). Files
    are copy-on-write on every tier; processes and memory come along on gVisor (``memory``
    true in the answer). The container tier cannot copy processes (no process checkpoint):
    its copies boot fresh processes on the source's files (``memory`` false), and asking for
    ``memory: true`` there is a 409 ``unsupported``. Each copy counts against the quotas like
    a create (429); the source carries on unchanged. 409 if the source is stopped."""
    return await control.fork(who, request_id, sandbox_id, body)

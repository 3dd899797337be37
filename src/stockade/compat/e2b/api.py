"""E2B's control plane (``/e2b/sandboxes``, ``/e2b/v2/sandboxes``) over Stockade's tenants and
engine: each handler parses E2B's body, makes one call, and renders E2B's shape and status."""

from __future__ import annotations

import base64
import datetime
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ...engine import EngineError
from ...models import ForkSpec, SandboxInfo
from ...server.auth import Principal
from . import gate, wire
from .gate import E2BError

router = APIRouter(prefix="/e2b")
Who = Annotated[Principal, Depends(gate.principal)]


def _created(request: Request, info: SandboxInfo, status: int) -> JSONResponse:
    body = wire.created(info, gate.envd_token(request, info.id), gate.traffic_token(request, info.id))
    return JSONResponse(body, status_code=status)


async def _create(
    request: Request, who: Principal, body: wire.NewSandbox, idempotency_key: str | None = None
) -> SandboxInfo:
    try:
        spec = body.spec()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise E2BError(400, f"{where}: {first['msg']}") from None
    ctl = gate.control(request)
    if idempotency_key:
        return await ctl.create_once(who, request.state.request_id, spec, idempotency_key)
    return await ctl.create(who, request.state.request_id, spec)


@router.post("/sandboxes", status_code=201)
async def create_v1(request: Request, who: Who, body: wire.NewSandbox) -> JSONResponse:
    """Create a sandbox (SDK 2.45 and older)."""
    return _created(request, await _create(request, who, body), 201)


@router.post("/v2/sandboxes", status_code=201)
async def create_v2(
    request: Request,
    who: Who,
    body: wire.NewSandbox,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> JSONResponse:
    """Create a sandbox; a repeated ``Idempotency-Key`` returns the first one's sandbox (kept
    in the store, so across restarts and replicas)."""
    return _created(request, await _create(request, who, body, idempotency_key), 201)


async def _visible(request: Request, who: Principal) -> list[SandboxInfo]:
    """The caller's sandboxes; one being killed is gone already, as on E2B."""
    ctl = gate.control(request)
    return [s for s in ctl.visible(who, await ctl.engine.sandboxes.list()) if s.state != "killing"]


@router.get("/sandboxes/{sandbox_id}")
async def get_sandbox(request: Request, who: Who, sandbox_id: str) -> dict[str, Any]:
    info = await gate.engine(request).sandboxes.get(gate.owned(request, who, sandbox_id))
    return wire.detail(info, gate.envd_token(request, sandbox_id))


@router.get("/sandboxes")
async def list_v1(
    request: Request, who: Who, metadata: Annotated[str | None, Query(max_length=4096)] = None
) -> list[dict[str, Any]]:
    """Running sandboxes (v1 list)."""
    wanted = wire.metadata_filter(metadata)
    return [
        wire.listed(s)
        for s in await _visible(request, who)
        if s.state == "running" and all(s.metadata.get(k) == v for k, v in wanted.items())
    ]


def _cursor(item: SandboxInfo) -> str:
    return base64.urlsafe_b64encode(f"{item.created_at!r}|{item.id}".encode()).decode()


def _position(token: str) -> tuple[float, str]:
    try:
        when, _, sandbox_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return float(when), sandbox_id
    except ValueError:
        raise E2BError(400, "nextToken is not a token this server handed out") from None


@router.get("/v2/sandboxes")
async def list_v2(
    request: Request,
    response: Response,
    who: Who,
    metadata: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=64)] = None,
    template: Annotated[str | None, Query(max_length=128)] = None,
    started_after: Annotated[datetime.datetime | None, Query(alias="startedAfter")] = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    next_token: Annotated[str | None, Query(alias="nextToken", max_length=256)] = None,
) -> list[dict[str, Any]]:
    """Sandboxes filtered by metadata (AND), state, template and start time (inclusive),
    ordered by start time, paged with ``X-Next-Token`` (sent only when another page exists)."""
    wanted = wire.metadata_filter(metadata)
    states = set(state.split(",")) if state else {"running", "paused"}
    if not states <= {"running", "paused"}:
        raise E2BError(400, f"state must be a comma-separated subset of running,paused, not {state!r}")
    if started_after is not None and started_after.tzinfo is None:
        raise E2BError(400, "startedAfter needs a time zone offset (e.g. Z)")
    since = started_after or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    template = wire.TEMPLATE_ALIASES.get(template, template) if template else None
    items = [
        s
        for s in await _visible(request, who)
        if wire.state(s) in states
        and all(s.metadata.get(k) == v for k, v in wanted.items())
        and wire.when(s.created_at) >= since
        and template in (None, s.template)
    ]
    desc = order == "desc"
    items.sort(key=lambda s: (s.created_at, s.id), reverse=desc)
    if next_token:
        mark = _position(next_token)
        items = [s for s in items if ((s.created_at, s.id) < mark) == desc and (s.created_at, s.id) != mark]
    page = items[:limit]
    if len(items) > limit:
        response.headers["X-Next-Token"] = _cursor(page[-1])
    return [wire.listed(s) for s in page]


@router.delete("/sandboxes/{sandbox_id}", status_code=204)
async def kill(request: Request, who: Who, sandbox_id: str) -> Response:
    await gate.control(request).kill(who, gate.owned(request, who, sandbox_id), request.state.request_id)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout", status_code=204)
async def set_timeout(request: Request, who: Who, sandbox_id: str, body: wire.Timeout) -> Response:
    """End the sandbox ``timeout`` seconds from now (0: at once)."""
    await gate.control(request).set_timeout(
        who, gate.owned(request, who, sandbox_id), max(body.timeout, 1), request.state.request_id
    )
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/refreshes", status_code=204)
async def refresh(request: Request, who: Who, sandbox_id: str, body: wire.Refresh) -> Response:
    """Keep the sandbox alive ``duration`` seconds (default: its own timeout) from now."""
    info = await gate.engine(request).sandboxes.get(gate.owned(request, who, sandbox_id))
    await gate.control(request).set_timeout(
        who, sandbox_id, body.duration or info.timeout, request.state.request_id
    )
    return Response(status_code=204)


@router.put("/sandboxes/{sandbox_id}/network", status_code=204)
async def update_network(request: Request, who: Who, sandbox_id: str, body: wire.NetworkUpdate) -> Response:
    """Replace the egress policy of a sandbox created with one (409 for one without)."""
    try:
        policy = body.policy()
    except ValidationError as exc:
        raise E2BError(400, f"network: {exc.errors()[0]['msg']}") from None
    await gate.engine(request).sandboxes.set_network(gate.owned(request, who, sandbox_id), policy)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/pause", status_code=204)
async def pause(request: Request, who: Who, sandbox_id: str, body: wire.Pause) -> Response:
    """Pause with memory (409 if already paused). Without memory: stop, keeping files."""
    sandboxes = gate.engine(request).sandboxes
    owned = gate.owned(request, who, sandbox_id)
    await (sandboxes.pause(owned) if body.memory else sandboxes.stop(owned))
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/fork", status_code=201)
async def fork(request: Request, who: Who, sandbox_id: str, body: wire.Fork) -> JSONResponse:
    """Stockade's fork (docs/fork.md: processes and memory where the tier can, files on
    every tier), all copies or none; each copy then lives ``timeout`` seconds (a copy whose
    timeout the tenant's quota refuses is killed and reported as that fork's error)."""
    ctl = gate.control(request)
    result = await ctl.fork(
        who, request.state.request_id, gate.owned(request, who, sandbox_id), ForkSpec(count=body.count)
    )
    items: list[dict[str, Any]] = []
    for copy in result.items:
        try:
            info = await ctl.set_timeout(who, copy.id, body.timeout, request.state.request_id)
        except EngineError as exc:
            await ctl.kill(who, copy.id, request.state.request_id)
            items.append({"error": {"code": exc.status, "message": exc.message}})
            continue
        items.append(
            {
                "sandbox": wire.created(
                    info, gate.envd_token(request, info.id), gate.traffic_token(request, info.id)
                )
            }
        )
    return JSONResponse(items, status_code=201)


async def _connect(request: Request, who: Principal, sandbox_id: str, timeout: int | None) -> JSONResponse:
    """Resume or start the sandbox if needed (201), else 200; ``timeout`` only ever extends
    its end (``memory: false``, a cold resume, is not offered: a paused sandbox resumes)."""
    ctl, owned = gate.control(request), gate.owned(request, who, sandbox_id)
    before = await ctl.engine.sandboxes.get(owned)
    info = await ctl.connect_sandbox(who, owned)
    if timeout and time.time() + timeout > info.expires_at:
        info = await ctl.set_timeout(who, owned, timeout, request.state.request_id)
    return _created(request, info, 200 if before.state == "running" else 201)


@router.post("/sandboxes/{sandbox_id}/connect")
async def connect_v1(request: Request, who: Who, sandbox_id: str, body: wire.Connect) -> JSONResponse:
    return await _connect(request, who, sandbox_id, body.timeout)


@router.post("/v2/sandboxes/{sandbox_id}/connect")
async def connect_v2(request: Request, who: Who, sandbox_id: str, body: wire.Connect) -> JSONResponse:
    return await _connect(request, who, sandbox_id, body.timeout)


@router.post("/sandboxes/{sandbox_id}/resume", status_code=201)
async def resume(request: Request, who: Who, sandbox_id: str, body: wire.Connect) -> JSONResponse:
    """Resume a paused sandbox (409 if it runs)."""
    info = await gate.engine(request).sandboxes.resume(gate.owned(request, who, sandbox_id))
    if body.timeout:
        info = await gate.control(request).set_timeout(
            who, sandbox_id, body.timeout, request.state.request_id
        )
    return _created(request, info, 201)


@router.get("/sandboxes/{sandbox_id}/metrics")
async def metrics(
    request: Request,
    who: Who,
    sandbox_id: str,
    start: Annotated[int | None, Query(ge=0)] = None,
    end: Annotated[int | None, Query(ge=0)] = None,
) -> list[dict[str, Any]]:
    """One sample taken now, if ``now`` is inside the asked window."""
    sandboxes = gate.engine(request).sandboxes
    info = await sandboxes.get(gate.owned(request, who, sandbox_id))
    now = time.time()
    if (start is not None and now < start) or (end is not None and now > end + 1):
        return []
    if info.state != "running":
        return []
    return [wire.metric(info, await sandboxes.stats(sandbox_id), now)]

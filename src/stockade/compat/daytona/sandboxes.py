"""``/daytona/api/sandbox``: Daytona sandboxes as Stockade workspaces (persistence="workspace").

Auto-stop (auto-pause) is Stockade's ``idle_timeout`` with ``on_timeout="stop"`` (``"pause"``);
auto-delete and auto-archive are Stockade's; names and labels live in the sandbox's metadata.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Awaitable, Callable

from fastapi import APIRouter, Query, Response

from ...engine import Conflict, SandboxNotFound
from ...models import ForkSpec, NetworkPolicy, ResizeSpec, SandboxEnd, SandboxInfo, SandboxSpec, VolumeMount
from . import render
from ._base import API, DaytonaError, DaytonaRoute, gib, not_found
from ._lookup import Answer, AnswerDep, SandboxId, visible
from .builds import image_template
from .wire import (
    DEFAULT_AUTO_ARCHIVE,
    DEFAULT_AUTO_STOP,
    KEEP_LONGEST,
    MAX_TTL_MINUTES,
    NAME_KEY,
    NEVER,
    RESERVED,
    STATES,
    TIER_LABEL,
    CreateSandbox,
    ForkSandbox,
    Labels,
    ResizeSandbox,
    NetworkSettings,
    SandboxSnapshot,
)

router = APIRouter(prefix=API + "/sandbox", route_class=DaytonaRoute, tags=["daytona"])


def _timeout(minutes: int | None, age: float = 0.0) -> float:
    """The timeout for an auto-stop interval; "never" (0) is the rest of the longest lifetime
    for a sandbox ``age`` seconds old."""
    minutes = DEFAULT_AUTO_STOP if minutes is None else minutes
    return max(60.0, NEVER - age - 2) if minutes == 0 else float(minutes * 60)


def _auto_delete(minutes: int | None) -> float:
    if minutes is None or minutes < 0:
        return KEEP_LONGEST
    return max(1.0, float(minutes * 60))


def _auto_archive(minutes: int | None) -> float | None:
    """Seconds after a stop to archive (Daytona's default: 7 days; 0: never)."""
    minutes = DEFAULT_AUTO_ARCHIVE if minutes is None else minutes
    return float(minutes * 60) if minutes else None


def _allowed(body: CreateSandbox | NetworkSettings) -> list[str]:
    return [
        a.strip()
        for text in (body.network_allow_list, body.domain_allow_list)
        if text
        for a in text.split(",")
        if a.strip()
    ]


def _network(body: CreateSandbox) -> NetworkPolicy | None:
    """Stockade's egress policy: none unless asked (``networkBlockAll: false`` opens the
    internet, minus the ranges Stockade always denies; allow lists open only themselves)."""
    allow = _allowed(body)
    if body.network_block_all or (not allow and body.network_block_all is None):
        return None
    return NetworkPolicy(allow_out=allow or ["0.0.0.0/0"])


def create_spec(body: CreateSandbox, template: str | None = None) -> SandboxSpec:
    """Stockade's sandbox spec for a Daytona CreateSandbox (``template``: built for it)."""
    if body.gpu:
        raise DaytonaError(400, "this server has no GPUs; leave gpu unset")
    if body.public:
        raise DaytonaError(
            400, "public previews are not supported: every preview link needs its token (leave public unset)"
        )
    if body.user not in (None, "user"):
        raise DaytonaError(
            400, f"os user {body.user!r} is not supported: sandboxes run as 'user' (leave os_user unset)"
        )
    if any(v.subpath for v in body.volumes):
        raise DaytonaError(400, "volume subpath is not supported; mount the whole volume")
    if body.ttl_minutes is not None and not 0 <= body.ttl_minutes <= MAX_TTL_MINUTES:
        raise DaytonaError(400, f"ttl_minutes must be between 0 (none) and {MAX_TTL_MINUTES}")
    if body.auto_pause_interval and body.auto_stop_interval:
        raise DaytonaError(
            400, "auto_stop_interval and auto_pause_interval are mutually exclusive: set one of them to 0"
        )
    metadata = dict(body.labels)
    if body.name:
        metadata[NAME_KEY] = body.name
    pause = bool(body.auto_pause_interval)
    return SandboxSpec(
        isolation=body.labels.get(TIER_LABEL, "container"),  # type: ignore[arg-type]
        template=template or body.snapshot,
        idle_timeout=True,
        timeout=_timeout(body.auto_pause_interval if pause else body.auto_stop_interval),
        envs=body.env,
        secrets=body.secret_envs(),
        metadata=metadata,
        cpu=body.cpu,
        memory_mb=body.memory * 1024 if body.memory else None,
        disk_mb=body.disk * 1024 if body.disk else None,
        network=_network(body),
        persistence="workspace",
        on_timeout="pause" if pause else "stop",
        auto_delete=_auto_delete(body.auto_delete_interval),
        auto_archive=_auto_archive(body.auto_archive_interval),
        ttl=body.ttl_minutes * 60.0 if body.ttl_minutes else None,
        volumes=[VolumeMount(volume=v.volume_id, path=v.mount_path) for v in body.volumes],
    )


@router.post("")
async def create_sandbox(body: CreateSandbox, answer: AnswerDep) -> dict[str, Any]:
    """Create a workspace and answer it started (from a snapshot, or from an image built
    first, while the request waits)."""
    ctl, who = answer.ctl, answer.who
    template = None if body.build_info is None else await image_template(ctl, who, body.build_info)
    spec = create_spec(body, template)
    if body.name and any(s.metadata.get(NAME_KEY) == body.name for s in await visible(ctl, who)):
        raise DaytonaError(409, f"Sandbox with name {body.name} already exists")
    return answer(await ctl.create(who, answer.request_id, spec))


@router.get("")
async def list_sandboxes(
    answer: AnswerDep,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    labels: Annotated[str | None, Query(max_length=65536)] = None,
    id: Annotated[str | None, Query(max_length=128)] = None,  # noqa: A002
    name: Annotated[str | None, Query(max_length=128)] = None,
    states: Annotated[list[str], Query()] = [],  # noqa: B006
) -> dict[str, Any]:
    """The caller's sandboxes by id, filtered by labels (JSON object), id, name and state."""
    try:
        wanted = json.loads(labels) if labels else {}
    except ValueError:
        raise DaytonaError(400, "labels must be a JSON object of strings") from None
    if not isinstance(wanted, dict):
        raise DaytonaError(400, "labels must be a JSON object of strings")
    items = [answer(s, full=False) for s in await visible(answer.ctl, answer.who)]
    items = [
        s
        for s in items
        if all(s["labels"].get(k) == v for k, v in wanted.items())
        and (id is None or s["id"] == id)
        and (name is None or s["name"] == name)
        and (not states or s["state"] in states)
        and (cursor is None or s["id"] > cursor)
    ]
    items.sort(key=lambda s: s["id"])
    page = items[:limit]
    return {"items": page, "nextCursor": page[-1]["id"] if len(items) > limit else None}


@router.get("/{sandboxIdOrName}")
async def get_sandbox(sandbox_id: SandboxId, answer: AnswerDep) -> dict[str, Any]:
    """The sandbox; one that ended on its own (out of memory, host lost...) reads as state
    ``error`` with the reason, while its end record is kept; a deleted one is not found."""
    try:
        return answer(await answer.ctl.engine.sandboxes.get(sandbox_id))
    except SandboxNotFound:
        end = await _ended(answer, sandbox_id)
        return render.ended(end, answer.who.tenant, answer.base)


async def _ended(answer: Answer, sandbox_id: str) -> SandboxEnd:
    """The end record of a sandbox that ended on its own; 404 for one deleted (by the user or
    by auto-delete) or unknown."""
    try:
        end = await answer.ctl.engine.sandboxes.end(sandbox_id)
    except (SandboxNotFound, Conflict):
        raise not_found(sandbox_id) from None
    if end.reason in render.GONE:
        raise not_found(sandbox_id)
    return end


@router.delete("/{sandboxIdOrName}")
async def delete_sandbox(sandbox_id: SandboxId, answer: AnswerDep) -> dict[str, Any]:
    """Delete the sandbox and everything in it; answers it ``destroyed`` (one that already
    ended on its own, state ``error``, has nothing left to delete: answered the same)."""
    sandboxes = answer.ctl.engine.sandboxes
    try:
        info = await sandboxes.get(sandbox_id)
    except SandboxNotFound:
        return answer((await _ended(answer, sandbox_id)).sandbox, state="destroyed")
    await answer.ctl.kill(answer.who, sandbox_id, answer.request_id)
    return answer(info, state="destroyed")


Verb = Callable[[Answer, str], Awaitable[SandboxInfo]]
#: Lifecycle calls that are one engine call each, answered with the sandbox's new state.
LIFECYCLE: dict[str, tuple[str, Verb]] = {
    "start": (
        "Start a stopped or archived sandbox on its kept files (a started one stays "
        "started; a paused one resumes).",
        lambda a, sid: a.ctl.connect_sandbox(a.who, sid),
    ),
    "stop": ("Stop every process; the files stay.", lambda a, sid: a.ctl.engine.sandboxes.stop(sid)),
    "pause": (
        "Keep processes and memory (gVisor: on disk; container: frozen); start resumes.",
        lambda a, sid: a.ctl.engine.sandboxes.pause(sid),
    ),
    "archive": (
        "Compress a stopped sandbox's files; start restores them.",
        lambda a, sid: a.ctl.engine.sandboxes.archive(sid),
    ),
}


def _lifecycle(verb: str, doc: str, call: Verb) -> None:
    async def route(sandbox_id: SandboxId, answer: AnswerDep) -> dict[str, Any]:
        return answer(await call(answer, sandbox_id))

    route.__doc__ = doc
    router.add_api_route(f"/{{sandboxIdOrName}}/{verb}", route, methods=["POST"], name=f"{verb}_sandbox")


for _verb, (_doc, _call) in LIFECYCLE.items():
    _lifecycle(_verb, _doc, _call)


@router.post("/{sandboxIdOrName}/recover")
async def recover_sandbox(sandbox_id: SandboxId, answer: AnswerDep) -> dict[str, Any]:
    """Daytona recovers sandboxes from a recoverable error; Stockade has none (every Sandbox
    says ``recoverable: false``), so this always answers why."""
    info = await answer.ctl.engine.sandboxes.get(sandbox_id)
    if STATES.get(info.state) in ("started", "stopped", "archived", "paused"):
        raise DaytonaError(
            400,
            f"Sandbox {sandbox_id} is {STATES[info.state]}, not in an "
            f"error state: there is nothing to recover",
        )
    raise DaytonaError(
        501,
        f"Sandbox {sandbox_id} failed ({info.reason or info.state}) and "
        f"cannot be recovered here: delete it and create a new one",
    )


@router.post("/{sandboxIdOrName}/public/{isPublic}")
async def set_public(
    sandbox_id: SandboxId,
    isPublic: bool,  # noqa: N803
    answer: AnswerDep,
) -> dict[str, Any]:
    """Previews are never public here (every port needs a token); ``false`` is accepted."""
    if isPublic:
        raise DaytonaError(
            501,
            "public previews are not supported: every preview link needs "
            "its token; use get_preview_link() or "
            "create_signed_preview_url() (a URL that carries its token)",
        )
    return answer(await answer.ctl.engine.sandboxes.get(sandbox_id))


@router.post("/{sandboxIdOrName}/snapshot")
async def snapshot_sandbox(sandbox_id: SandboxId, body: SandboxSnapshot, answer: AnswerDep) -> dict[str, Any]:
    """Save the sandbox's files as a snapshot (a template of the caller's tenant); the sandbox
    carries on in its state."""
    if body.include_memory:
        raise DaytonaError(
            400,
            "snapshots with memory are not supported: a snapshot keeps the "
            "files only (leave include_memory unset)",
        )
    await answer.ctl.engine.sandboxes.snapshot(sandbox_id, body.name, owner=answer.who.tenant)
    return answer(await answer.ctl.engine.sandboxes.get(sandbox_id))


@router.post("/{sandboxIdOrName}/network-settings")
async def network_settings(sandbox_id: SandboxId, body: NetworkSettings, answer: AnswerDep) -> dict[str, Any]:
    """Replace the egress policy of a sandbox created with network access (409 for one
    created blocked: it has no network interface to open)."""
    allow = _allowed(body)
    policy = NetworkPolicy(allow_out=[] if body.network_block_all else allow or ["0.0.0.0/0"])
    return answer(await answer.ctl.engine.sandboxes.set_network(sandbox_id, policy))


async def _set_idle(answer: Answer, sandbox_id: str, interval: int, action: str) -> SandboxInfo:
    """Auto-stop or auto-pause: ``interval`` minutes of inactivity (0: never). A sandbox does
    one of the two, chosen at create (Daytona's SDK keeps them exclusive too)."""
    if interval < 0:
        raise DaytonaError(400, f"auto-{action} interval must be 0 (never) or a number of minutes")
    info = await answer.ctl.engine.sandboxes.get(sandbox_id)
    if interval and info.on_timeout != action:
        raise DaytonaError(
            409,
            f"sandbox {sandbox_id} was created to {info.on_timeout} when "
            f"idle, not to {action}: set the auto-{action} interval at "
            f"create (auto_{action}_interval)",
        )
    return await answer.ctl.set_timeout(
        answer.who, sandbox_id, _timeout(interval, time.time() - info.created_at), answer.request_id
    )


@router.post("/{sandboxIdOrName}/autostop/{interval}")
async def set_autostop(sandbox_id: SandboxId, interval: int, answer: AnswerDep) -> dict[str, Any]:
    """Stop the sandbox after ``interval`` minutes without activity (0: never)."""
    return answer(await _set_idle(answer, sandbox_id, interval, "stop"))


@router.post("/{sandboxIdOrName}/autopause/{interval}")
async def set_autopause(sandbox_id: SandboxId, interval: int, answer: AnswerDep) -> dict[str, Any]:
    """Pause the sandbox after ``interval`` minutes without activity (0: never)."""
    return answer(await _set_idle(answer, sandbox_id, interval, "pause"))


@router.post("/{sandboxIdOrName}/resize")
async def resize(sandbox_id: SandboxId, body: ResizeSandbox, answer: AnswerDep) -> dict[str, Any]:
    """CPU and memory: upward while started (container tier), any way while stopped; the disk
    keeps its size (400 if asked to change)."""
    if body.cpu is None and body.memory is None and body.disk is None:
        raise DaytonaError(400, "resize needs at least one of cpu, memory and disk")
    info = await answer.ctl.engine.sandboxes.get(sandbox_id)
    if body.disk is not None and body.disk != gib(info.disk_mb):
        raise DaytonaError(
            400, f"the disk cannot be resized here (it has {gib(info.disk_mb)} GiB): create a new sandbox"
        )
    spec = ResizeSpec(cpu=body.cpu, memory_mb=body.memory * 1024 if body.memory else None)
    return answer(await answer.ctl.resize(answer.who, sandbox_id, spec, answer.request_id))


@router.post("/{sandboxIdOrName}/fork")
async def fork_sandbox(sandbox_id: SandboxId, body: ForkSandbox, answer: AnswerDep) -> dict[str, Any]:
    """A started copy of a started or paused sandbox with the same files (copy-on-write:
    Stockade's fork with ``memory: false``, docs/fork.md), named ``name`` or its id."""
    ctl, who = answer.ctl, answer.who
    if body.name and any(s.metadata.get(NAME_KEY) == body.name for s in await visible(ctl, who)):
        raise DaytonaError(409, f"Sandbox with name {body.name} already exists")
    result = await ctl.fork(who, answer.request_id, sandbox_id, ForkSpec(count=1, memory=False))
    copy = result.items[0]
    metadata = {k: v for k, v in copy.metadata.items() if k != NAME_KEY}
    if body.name:
        metadata[NAME_KEY] = body.name
    return answer(await ctl.engine.sandboxes.set_metadata(copy.id, metadata))


@router.put("/{sandboxIdOrName}/labels")
async def replace_labels(sandbox_id: SandboxId, body: Labels, answer: AnswerDep) -> dict[str, dict[str, str]]:
    """Replace every label (the sandbox's name is kept)."""
    if any(k.startswith(RESERVED) for k in body.labels):
        raise DaytonaError(400, f"labels starting with {RESERVED!r} are reserved")
    info = await answer.ctl.engine.sandboxes.get(sandbox_id)
    kept = {k: v for k, v in info.metadata.items() if k.startswith(RESERVED)}
    info = await answer.ctl.engine.sandboxes.set_metadata(sandbox_id, {**body.labels, **kept})
    return {"labels": render.labels(info.metadata)}


@router.post("/{sandboxIdOrName}/autodelete/{interval}")
async def set_autodelete(sandbox_id: SandboxId, interval: int, answer: AnswerDep) -> dict[str, Any]:
    """Delete the sandbox ``interval`` minutes after it stops (-1: never, 0: at once)."""
    return answer(
        await answer.ctl.engine.sandboxes.set_retention(sandbox_id, auto_delete=_auto_delete(interval))
    )


@router.post("/{sandboxIdOrName}/ttl/{minutes}")
async def set_ttl(sandbox_id: SandboxId, minutes: int, answer: AnswerDep) -> dict[str, Any]:
    """Delete the sandbox ``minutes`` from now whatever its state (0: no TTL)."""
    if not 0 <= minutes <= MAX_TTL_MINUTES:
        raise DaytonaError(400, f"ttl must be between 0 (none) and {MAX_TTL_MINUTES} minutes")
    return answer(await answer.ctl.engine.sandboxes.set_retention(sandbox_id, ttl=minutes * 60.0))


@router.post("/{sandboxIdOrName}/autoarchive/{interval}")
async def set_autoarchive(sandbox_id: SandboxId, interval: int, answer: AnswerDep) -> dict[str, Any]:
    """Archive the sandbox ``interval`` minutes after it stops (0: never)."""
    if interval < 0:
        raise DaytonaError(400, "auto-archive interval must be 0 (never) or a number of minutes")
    return answer(
        await answer.ctl.engine.sandboxes.set_retention(
            sandbox_id, auto_archive=float(interval * 60) if interval else None, archive_never=interval == 0
        )
    )


@router.post("/{sandboxIdOrName}/last-activity", status_code=201)
async def last_activity(sandbox_id: SandboxId, answer: AnswerDep) -> Response:
    """Count now as activity (the auto-stop or auto-pause clock restarts)."""
    await answer.ctl.engine.sandboxes.touch(sandbox_id)
    return Response(status_code=201)

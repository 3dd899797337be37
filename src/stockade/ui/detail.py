"""A sandbox's page (or, once it ended, its end record) and what keeps it live: ``/live``
(state, reason, usage charts, processes, egress log, as JSON for ``static/detail.js``),
following one process's output, killing a process, forking."""

from __future__ import annotations

import asyncio
import contextlib
import re
from html import escape
from urllib.parse import urlencode
from typing import Any, AsyncIterator, Awaitable, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ..models import SandboxEnd
from ..sdk import ApiError, AsyncSandbox, AsyncTemplate, SandboxNotFound, StockadeError, TemplateInfo
from . import charts, detail_page, pages
from .sessions import Session
from .web import HEADERS, Failure, api_url, html, note, refused, signed_in, take_note

SANDBOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HOLE = "\x00output\x00"
T = TypeVar("T")


def sandbox_id(request: Request) -> str:
    value = str(request.path_params["sandbox_id"])
    if not SANDBOX_ID.match(value):
        raise Failure(404, f"no sandbox {value!r}")
    return value


async def attach(request: Request, session: Session) -> AsyncSandbox:
    return await AsyncSandbox.get(sandbox_id(request), api_url=api_url(request), api_key=session.key)


def _pid(request: Request) -> int:
    try:
        pid = int(request.path_params["pid"])
    except ValueError:
        pid = 0
    if not 0 < pid < 1 << 22:
        raise Failure(404, f"no process {request.path_params['pid']!r}")
    return pid


async def _quietly(call: Awaitable[T], default: T) -> T:
    """``call``'s answer, or ``default`` if the sandbox cannot give it now (say, paused)."""
    try:
        return await call
    except StockadeError:
        return default


async def _moving_parts(sb: AsyncSandbox) -> dict[str, Any]:
    """What changes while a sandbox runs: usage (now and its history), processes, egress log."""
    running = sb.info.state == "running"
    stats = await _quietly(sb.stats(), None) if running else None
    usage = await _quietly(sb.usage(), None)
    processes = await _quietly(sb.commands.list(), []) if running else []
    egress = await _quietly(sb.egress_log(detail_page.EGRESS_SHOWN), []) if sb.info.network != "none" else []
    return {"stats": stats, "usage": usage, "processes": processes, "egress": egress}


async def _end(request: Request, session: Session) -> SandboxEnd | None:
    """The end record of the page's sandbox, if it ended and the record is still kept."""
    try:
        end: SandboxEnd = await AsyncSandbox.get_end(
            sandbox_id(request), api_url=api_url(request), api_key=session.key
        )
    except ApiError:  # not kept (404), or it exists after all (409)
        return None
    return end


async def _snapshots(request: Request, session: Session, sandbox: str) -> list[TemplateInfo]:
    source = pages.SNAPSHOT_OF + sandbox
    return [
        t
        for t in await _quietly(AsyncTemplate.list(api_url=api_url(request), api_key=session.key), [])
        if t.source == source
    ]


def _forked(request: Request) -> tuple[list[str], bool] | None:
    """The copies a fork just made (``?forked=ID,ID&memory=1``, where the fork sends the page)."""
    found = [i for i in request.query_params.get("forked", "").split(",")[:16] if SANDBOX_ID.match(i)]
    return (found, request.query_params.get("memory") == "1") if found else None


@signed_in
async def detail(request: Request, session: Session) -> Response:
    try:
        sb = await attach(request, session)
    except SandboxNotFound:
        end = await _end(request, session)
        if end is None:
            raise
        snapshots = await _snapshots(request, session, end.id)
        return html(detail_page.ended(session, end, snapshots, take_note(request)))
    try:
        parts = await _moving_parts(sb)
        snapshots = await _snapshots(request, session, sb.id)
    finally:
        await sb.close()
    return html(
        detail_page.sandbox_detail(session, sb.info, parts, snapshots, _forked(request), take_note(request))
    )


@signed_in
async def live(request: Request, session: Session) -> Response:
    """The page's moving parts as JSON; 404 once the sandbox is gone, with its end (reason and
    words) if kept, else the API's words."""
    try:
        sb = await attach(request, session)
    except SandboxNotFound as exc:
        end = await _end(request, session)
        gone = (
            {"ended": end.message, "reason": end.reason, "ended_at": end.ended_at}
            if end
            else {"ended": str(exc)}
        )
        return JSONResponse(gone, 404, headers=HEADERS)
    try:
        parts = await _moving_parts(sb)
    finally:
        await sb.close()
    info = sb.info
    return JSONResponse(
        {
            "state": info.state,
            "reason": info.reason,
            "message": info.message,
            "expires_at": info.expires_at,
            "stats": parts["stats"],
            "charts": charts.series(parts["usage"]),
            "egress": parts["egress"],
            "processes": [p.model_dump() for p in parts["processes"]],
        },
        headers=HEADERS,
    )


@signed_in
async def fork(request: Request, session: Session) -> Response:
    """``count`` copies of the sandbox; the page then lists them and says whether processes
    and memory came along, or why the API refused."""
    form = request.state.form
    try:
        count = int(str(form.get("count") or "1"))
    except ValueError:
        count = 0
    memory = FORK_MEMORY.get(str(form.get("memory") or ""), "bad")
    if not 1 <= count <= 16 or memory == "bad":
        raise Failure(
            400,
            "give a number of copies from 1 to 16 and what to copy (memory: 'auto', 'required' or 'files')",
        )
    sb = await attach(request, session)
    back = f"/ui/sandboxes/{sb.id}"
    try:
        copies = await sb.fork(count, memory=memory)  # type: ignore[arg-type]
    except ApiError as exc:
        return refused(request, f"fork of {count}", exc, back)
    finally:
        await sb.close()
    for copy in copies:
        await copy.close()
    copied = bool(copies and copies[0].forked_memory)
    return RedirectResponse(
        back + "?" + urlencode({"forked": ",".join(c.id for c in copies), "memory": int(copied)}), 303
    )


#: The fork form's choices: copy processes and memory if the tier can, require it, or not.
FORK_MEMORY: dict[str, bool | None] = {"": None, "auto": None, "required": True, "files": False}


@signed_in
async def stats(request: Request, session: Session) -> Response:
    """The sandbox's current usage as JSON."""
    sb = await attach(request, session)
    try:
        now = await sb.stats()
    finally:
        await sb.close()
    return JSONResponse(now, headers=HEADERS)


@signed_in
async def follow(request: Request, session: Session) -> Response:
    """A page that a process's output streams into, from now until it ends or the page closes."""
    pid = _pid(request)
    sb = await attach(request, session)
    queue: asyncio.Queue[str] = asyncio.Queue()
    try:
        handle = await sb.commands.connect(pid, on_stdout=queue.put_nowait, on_stderr=queue.put_nowait)
    except BaseException:
        await sb.close()
        raise
    head, tail = detail_page.follow(session, sb.id, pid, HOLE).split(HOLE)
    return StreamingResponse(
        _stream(sb, handle, queue, head, tail), media_type="text/html; charset=utf-8", headers=HEADERS
    )


async def _stream(
    sb: AsyncSandbox, handle: Any, queue: asyncio.Queue[str], head: str, tail: str
) -> AsyncIterator[str]:
    yield head
    ended = asyncio.ensure_future(handle.wait())
    try:
        while not (ended.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, ended}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield escape(getter.result())
            else:
                getter.cancel()
        try:
            result = ended.result()
            end = f"exited with code {result.exit_code}"
        except StockadeError as exc:
            end = f"ended: {exc}"
        yield f'</pre><p class="message" id="process-end">{escape(end)}</p>' + tail
    finally:
        if not ended.done():  # the browser left: stop following (the process goes on)
            ended.cancel()
            await handle.disconnect()
        with contextlib.suppress(Exception):
            await sb.close()


@signed_in
async def kill_process(request: Request, session: Session) -> Response:
    pid = _pid(request)
    sb = await attach(request, session)
    try:
        killed = await sb.commands.kill(pid)
    finally:
        await sb.close()
    note(request, f"killed process {pid}" if killed else f"process {pid} had already ended")
    return RedirectResponse(f"/ui/sandboxes/{sb.id}", 303)


ROUTES = [
    Route("/ui/sandboxes/{sandbox_id}", detail),
    Route("/ui/sandboxes/{sandbox_id}/live", live),
    Route("/ui/sandboxes/{sandbox_id}/stats", stats),
    Route("/ui/sandboxes/{sandbox_id}/fork", fork, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/processes/{pid}", follow),
    Route("/ui/sandboxes/{sandbox_id}/processes/{pid}/kill", kill_process, methods=["POST"]),
]

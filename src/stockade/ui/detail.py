"""A sandbox's page and what keeps it live: ``/live`` (state, reason, usage, processes, egress
log, as JSON for ``static/detail.js``), following one process's output, killing a process."""

from __future__ import annotations

import asyncio
import contextlib
import re
from html import escape
from typing import Any, AsyncIterator, Awaitable, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ..sdk import AsyncSandbox, AsyncTemplate, NotFoundError, StockadeError
from . import detail_page, pages
from .sessions import Session
from .web import HEADERS, Failure, api_url, html, note, signed_in, take_note

SANDBOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HOLE = "\x00output\x00"
T = TypeVar("T")


def sandbox_id(request: Request) -> str:
    value = str(request.path_params["sandbox_id"])
    if not SANDBOX_ID.match(value):
        raise Failure(404, f"no sandbox {value!r}")
    return value


async def attach(request: Request, session: Session) -> AsyncSandbox:
    return await AsyncSandbox.get(sandbox_id(request), api_url=api_url(request),
                                  api_key=session.key)


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
    """What changes while a sandbox runs: usage, processes, egress log."""
    running = sb.info.state == "running"
    stats = await _quietly(sb.stats(), None) if running else None
    processes = await _quietly(sb.commands.list(), []) if running else []
    egress = (await _quietly(sb.egress_log(detail_page.EGRESS_SHOWN), [])
              if sb.info.network != "none" else [])
    return {"stats": stats, "processes": processes, "egress": egress}


@signed_in
async def detail(request: Request, session: Session) -> Response:
    sb = await attach(request, session)
    try:
        parts = await _moving_parts(sb)
        source = pages.SNAPSHOT_OF + sb.id
        snapshots = [t for t in await _quietly(AsyncTemplate.list(
            api_url=api_url(request), api_key=session.key), []) if t.source == source]
    finally:
        await sb.close()
    return html(detail_page.sandbox_detail(
        session, sb.info, parts["stats"], parts["processes"], parts["egress"], snapshots,
        take_note(request)))


@signed_in
async def live(request: Request, session: Session) -> Response:
    """The page's moving parts as JSON; 404 with the API's words once the sandbox is gone."""
    try:
        sb = await attach(request, session)
    except NotFoundError as exc:
        return JSONResponse({"ended": str(exc)}, 404, headers=HEADERS)
    try:
        parts = await _moving_parts(sb)
    finally:
        await sb.close()
    info = sb.info
    return JSONResponse({
        "state": info.state, "reason": info.reason, "expires_at": info.expires_at,
        "stats": parts["stats"], "egress": parts["egress"],
        "processes": [p.model_dump() for p in parts["processes"]]}, headers=HEADERS)


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
        handle = await sb.commands.connect(pid, on_stdout=queue.put_nowait,
                                           on_stderr=queue.put_nowait)
    except BaseException:
        await sb.close()
        raise
    head, tail = detail_page.follow(session, sb.id, pid, HOLE).split(HOLE)
    return StreamingResponse(_stream(sb, handle, queue, head, tail),
                             media_type="text/html; charset=utf-8", headers=HEADERS)


async def _stream(sb: AsyncSandbox, handle: Any, queue: asyncio.Queue[str], head: str,
                  tail: str) -> AsyncIterator[str]:
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
    Route("/ui/sandboxes/{sandbox_id}/processes/{pid}", follow),
    Route("/ui/sandboxes/{sandbox_id}/processes/{pid}/kill", kill_process, methods=["POST"]),
]

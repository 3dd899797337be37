"""Build a template from a Dockerfile in the dashboard, its log streamed into the page as
the build runs (the browser renders the response as it arrives; no script needed). Leaving
the page cancels the build, as closing the API's stream does."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from html import escape
from pathlib import Path
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..sdk import AsyncTemplate, StockadeError
from . import pages
from .admin import checked_name
from .sessions import Session
from .web import HEADERS, Failure, api_url, signed_in

MAX_DOCKERFILE = 64 * 1024
#: Stands for the streamed part in the page around it.
HOLE = "\x00build-log\x00"


def _line(event: dict[str, Any]) -> str:
    if event.get("type") == "step":
        return f"[{event['step']}/{event['total']}] {event['instruction']}: {event['status']}\n"
    if event.get("type") == "log":
        return str(event.get("data", ""))
    return ""


@signed_in
async def build(request: Request, session: Session) -> Response:
    form = request.state.form
    name = checked_name(form.get("name"), "the template name")
    dockerfile = str(form.get("dockerfile") or "")
    if not dockerfile.strip() or len(dockerfile) > MAX_DOCKERFILE:
        raise Failure(
            400,
            f"give a Dockerfile (at most {MAX_DOCKERFILE // 1024} KiB), "
            f"starting with FROM and a template name",
        )
    url = api_url(request)
    head, tail = pages.build(session, name, HOLE).split(HOLE)
    return StreamingResponse(
        _stream(head, tail, name, dockerfile, url, session.key),
        media_type="text/html; charset=utf-8",
        headers=HEADERS,
    )


async def _stream(head: str, tail: str, name: str, dockerfile: str, url: str, key: str) -> AsyncIterator[str]:
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def run() -> str:
        with tempfile.TemporaryDirectory(prefix="stockade-ui-build-") as tmp:
            path = Path(tmp) / "Dockerfile"
            path.write_text(dockerfile)
            try:
                info = await AsyncTemplate.build(
                    path,
                    name=name,
                    api_url=url,
                    api_key=key,
                    on_event=lambda event: queue.put_nowait(_line(event)),
                )
            except StockadeError as exc:
                return f'<p id="build-result" class="message failed">failed: {escape(str(exc))}</p>'
        return (
            f'<p id="build-result" class="message built">built template '
            f'<a href="/ui/templates">{escape(info.name)}</a></p>'
        )

    yield head
    task = asyncio.create_task(run())
    try:
        while not (task.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield escape(getter.result())
            else:
                getter.cancel()
        yield "</pre>" + await task + tail
    finally:
        if not task.done():  # the browser left: cancel the build
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


ROUTES = [Route("/ui/templates/build", build, methods=["POST"])]

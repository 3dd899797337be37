"""The host's template routes, for API replicas only (on the stream endpoint, signed requests).

A replica that receives ``POST /templates/build`` or ``/templates/import`` has decided who may
do it; it sends the build context (or the image archive) here, with the template's owner and
the owners whose templates the caller may build on. The host adopts the Dockerfile's ``FROM``
template from shared storage if it lacks it, builds (streaming the native route's NDJSON
events) or imports, and publishes the result to shared storage before answering, so every
host can run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from ..engine import Engine, InvalidRequest
from ..images.build_context import ContextError, unpack
from ..images.dockerfile import DockerfileError, parse
from ..models import TemplateInfo
from ..server.routes.templates import _RUNNING, NameQuery, _events, _read_dockerfile, _receive
from ..server.streaming import NDJSON
from .shared_templates import HostTemplates

router = APIRouter(prefix="/cluster/templates")
Owners = Annotated[str, Query(max_length=65536, description="comma-separated owners the caller sees")]


def _parts(request: Request) -> tuple[Engine, HostTemplates]:
    return request.app.state.engine, request.app.state.templates


def _visible(owner: str, may_use: str) -> Any:
    allowed = {o for o in may_use.split(",") if o} | ({owner} if owner else set())
    return lambda who: who in allowed


@router.post("/build", response_class=StreamingResponse)
async def build(
    request: Request,
    name: NameQuery,
    dockerfile: str = "Dockerfile",
    network: str = "none",
    owner: str = "",
    may_use: Owners = "",
) -> StreamingResponse:
    """Build from the uploaded context (a tar) as the native route does; publish the result."""
    engine, templates = _parts(request)
    try:
        policy = "none" if network == "none" else json.loads(network)
    except ValueError:
        raise InvalidRequest('network must be "none" or a JSON egress policy') from None
    work = engine.templates.workspace()
    try:
        await _receive(request, work / "context.tar")
        context = work / "context"
        context.mkdir()
        await asyncio.to_thread(unpack, work / "context.tar", context)
        text = await asyncio.to_thread(_read_dockerfile, context, dockerfile)
    except ContextError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise InvalidRequest(str(exc)) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run() -> TemplateInfo:
        with contextlib.suppress(DockerfileError, IndexError):
            await templates.ensure(parse(text)[0].args[0])  # FROM: a template made elsewhere
        templates.check_free(name)
        made = engine.templates.build(
            text,
            name,
            context,
            owner=owner or None,
            visible=_visible(owner, may_use),
            emit=queue.put_nowait,
            network=policy,
        )
        info = await made.run()
        await templates.publish(name)
        return info

    task = asyncio.create_task(run())
    _RUNNING.add(task)

    def finished(done: asyncio.Task[Any]) -> None:
        _RUNNING.discard(done)
        queue.put_nowait(None)
        shutil.rmtree(work, ignore_errors=True)

    task.add_done_callback(finished)
    return StreamingResponse(_events(queue, task), media_type=NDJSON)


@router.post("/import", status_code=201, response_model=TemplateInfo)
async def import_template(request: Request, name: NameQuery, owner: str = "") -> TemplateInfo:
    """Import the uploaded OCI layout or ``docker save`` archive; publish the result."""
    engine, templates = _parts(request)
    templates.check_free(name)
    work = engine.templates.workspace()
    try:
        await _receive(request, work / "image.tar")
        info = await engine.templates.import_image(name, work / "image.tar", owner or None)
        await templates.publish(name)
        return info
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)

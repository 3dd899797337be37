"""Templates: list, get, delete, build from a Dockerfile (streamed), import an OCI image.

A template records the tenant that built or imported it and only that tenant (and the admin key)
sees, uses (``Sandbox.create``, ``FROM``) and deletes it; one made with ``public=true`` (admin
key only) or on the host (``stockade image build``) has no owner and every tenant may use it.
Another tenant's template answers exactly like a missing one (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from ...engine import EngineError, InvalidRequest
from ...images.build_context import ContextError, unpack
from ...images.dockerfile import context_path
from ..auth import Principal
from ..deps import EngineDep, Forbidden, PrincipalDep
from ..models import TemplateInfo, TemplatePage
from ..streaming import NDJSON

router = APIRouter(prefix="/templates", tags=["templates"])
log = logging.getLogger("stockade.server")
#: The most a build context or an imported image may be, as uploaded.
MAX_UPLOAD = 4 << 30
KEEPALIVE = 15.0
NameQuery = Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="the template's name")]
_RUNNING: set[asyncio.Task[Any]] = set()


def _owner(who: Principal, public: bool) -> str | None:
    if public and not who.admin:
        raise Forbidden("only the admin key may make a template every tenant can use")
    return None if public else who.tenant


@router.get("", response_model=TemplatePage)
async def list_templates(eng: EngineDep, who: PrincipalDep) -> TemplatePage:
    """The templates you may use: shared ones and your own (every one with the admin key)."""
    return TemplatePage(items=await eng.templates.list(who.may_see), next_cursor=None)


@router.get("/{name}", response_model=TemplateInfo)
async def get_template(name: str, eng: EngineDep, who: PrincipalDep) -> TemplateInfo:
    return await eng.templates.get(name, who.may_see)


@router.delete("/{name}", status_code=204)
async def remove_template(name: str, eng: EngineDep, who: PrincipalDep) -> Response:
    """Delete a template and its build cache (409 while a sandbox or another template uses
    it; 403 for a shared template unless with the admin key)."""
    info = await eng.templates.get(name, who.may_see)
    if info.owner is None and not who.admin:
        raise Forbidden(f"template {name!r} is shared by the operator; only the admin key may delete it")
    await eng.templates.delete(name)
    return Response(status_code=204)


@router.post("/prune")
async def prune(eng: EngineDep, who: PrincipalDep) -> dict[str, Any]:
    """Delete your build-cache layers that no template and no sandbox uses."""
    return {"removed": await eng.templates.prune(who.tenant, everyone=who.admin)}


async def _receive(request: Request, path: Path) -> None:
    size = 0
    with open(path, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD:
                raise InvalidRequest(f"the upload is larger than {MAX_UPLOAD >> 20} MiB")
            f.write(chunk)


def _read_dockerfile(context: Path, name: str) -> str:
    rel = context_path(name)
    path = (context / rel).resolve() if rel is not None else None
    if path is None or context.resolve() not in path.parents or not path.is_file():
        raise InvalidRequest(f"no Dockerfile {name!r} in the build context")
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read the Dockerfile {name!r}: {exc}") from None


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


@router.post(
    "/build",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": "build events"}},
)
async def build_template(
    request: Request,
    eng: EngineDep,
    who: PrincipalDep,
    name: NameQuery,
    dockerfile: Annotated[str, Query(max_length=4096, description="its path in the context")] = "Dockerfile",
    network: Annotated[
        str, Query(max_length=65536, description='"none" or a JSON egress policy for RUN steps')
    ] = "none",
    public: bool = False,
) -> StreamingResponse:
    """Build a template from a Dockerfile subset (FROM, RUN, COPY, ENV, WORKDIR, USER); the
    body is a tar (optionally compressed) of the build context, holding the Dockerfile.

    Streams NDJSON: ``step`` events (``step``, ``total``, ``instruction``, ``status``:
    started, built, cached or configured), ``log`` events (a RUN's output), ``keepalive``,
    then ``{"type": "template", "template": {...}}`` or ``{"type": "error", "code",
    "message"}``. Closing the connection cancels the build; nothing of it is left but the
    build cache of the steps that finished."""
    owner = _owner(who, public)
    try:
        policy = "none" if network == "none" else json.loads(network)
    except ValueError:
        raise InvalidRequest('network must be "none" or a JSON egress policy') from None
    work = eng.templates.workspace()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    try:
        await _receive(request, work / "context.tar")
        context = work / "context"
        context.mkdir()
        await asyncio.to_thread(unpack, work / "context.tar", context)
        (work / "context.tar").unlink()
        text = await asyncio.to_thread(_read_dockerfile, context, dockerfile)
        build = eng.templates.build(
            text, name, context, owner=owner, visible=who.may_see, emit=queue.put_nowait, network=policy
        )
    except ContextError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise InvalidRequest(str(exc)) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    task = asyncio.create_task(build.run())
    _RUNNING.add(task)

    def finished(done: asyncio.Task[Any]) -> None:
        _RUNNING.discard(done)
        queue.put_nowait(None)
        shutil.rmtree(work, ignore_errors=True)

    task.add_done_callback(finished)
    return StreamingResponse(_events(queue, task), media_type=NDJSON)


async def _events(
    queue: "asyncio.Queue[dict[str, Any] | None]", task: "asyncio.Task[TemplateInfo]"
) -> AsyncIterator[bytes]:
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except asyncio.TimeoutError:
                yield _line({"type": "keepalive"})
                continue
            if event is None:
                break
            yield _line(event)
        try:
            yield _line({"type": "template", "template": task.result().model_dump()})
        except EngineError as exc:
            yield _line({"type": "error", "code": exc.code, "message": exc.message})
        except Exception as exc:  # noqa: BLE001 - the stream has started; report, do not crash
            log.exception("template build failed")
            yield _line(
                {"type": "error", "code": "internal", "message": f"internal error ({type(exc).__name__})"}
            )
    finally:
        if not task.done():  # the client went away: cancel; the task cleans up after itself
            task.cancel()


@router.post("/import", status_code=201, response_model=TemplateInfo)
async def import_template(
    request: Request, eng: EngineDep, who: PrincipalDep, name: NameQuery, public: bool = False
) -> TemplateInfo:
    """Make a template from the body: an OCI image layout (as a tar) or a ``docker save``
    archive. The image must hold python3 (the sandbox agent runs on it)."""
    owner = _owner(who, public)
    work = eng.templates.workspace()
    try:
        await _receive(request, work / "image.tar")
        return await eng.templates.import_image(name, work / "image.tar", owner)
    finally:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, work)

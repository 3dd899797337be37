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
import time
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from ...engine import Conflict, EngineError, InvalidRequest, NotFound
from ...engine.template_build import TemplateBuild, delete_template, prune_cache, template_json
from ...images import ImageError, ImageExists, ImageInfo
from ...images.build_context import ContextError, unpack
from ...images.dockerfile import context_path
from ...images.oci_import import import_image
from ...images.store import validate_name
from ..auth import Principal
from ..deps import EngineDep, Forbidden, PrincipalDep
from ..models import TemplateInfo, TemplatePage
from ..streaming import NDJSON

router = APIRouter(prefix="/templates", tags=["templates"])
log = logging.getLogger("stockade.server")
#: The most a build context or an imported image may be, as uploaded.
MAX_UPLOAD = 4 << 30
KEEPALIVE = 15.0
NameQuery = Annotated[str, Query(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
                                 description="the template's name")]
_RUNNING: set[asyncio.Task[Any]] = set()


def may_use(who: Principal, info: ImageInfo) -> bool:
    """Whether ``who`` may see and use ``info`` (a shared template, or one of its own)."""
    return info.owner is None or who.may_see(info.owner)


def visible_template(eng: Any, who: Principal, name: str) -> ImageInfo:
    """Template ``name`` if ``who`` may use it; NotFound (as for a missing one) otherwise."""
    try:
        info: ImageInfo = eng.images.get(validate_name(name))
    except (ImageError, ValueError):
        info = None  # type: ignore[assignment]
    if info is None or info.hidden or not may_use(who, info):
        raise NotFound(f"no template {name!r}; see GET /templates (or `stockade image ls`)")
    return info


def usable_template(eng: Any, who: Principal, name: str) -> None:
    """Refuse a sandbox's ``template`` that ``who`` may not use, in the words the engine uses
    for a missing one."""
    try:
        visible_template(eng, who, name)
    except NotFound:
        raise InvalidRequest(f"no template {name!r} on this host; build it with 'stockade image "
                             f"build' or see 'stockade image ls'") from None


def _owner(who: Principal, public: bool) -> str | None:
    if public and not who.admin:
        raise Forbidden("only the admin key may make a template every tenant can use")
    return None if public else who.tenant


@router.get("", response_model=TemplatePage)
async def list_templates(eng: EngineDep, who: PrincipalDep) -> dict[str, Any]:
    """The templates you may use: shared ones and your own (every one with the admin key)."""
    infos = await asyncio.to_thread(eng.images.list)
    return {"items": [template_json(i) for i in infos if not i.hidden and may_use(who, i)],
            "next_cursor": None}


@router.get("/{name}", response_model=TemplateInfo)
async def get_template(name: str, eng: EngineDep, who: PrincipalDep) -> dict[str, Any]:
    return template_json(visible_template(eng, who, name))


@router.delete("/{name}", status_code=204)
async def remove_template(name: str, eng: EngineDep, who: PrincipalDep) -> Response:
    """Delete a template and its build cache (409 while a sandbox or another template uses
    it; 403 for a shared template unless with the admin key)."""
    info = visible_template(eng, who, name)
    if info.owner is None and not who.admin:
        raise Forbidden(f"template {name!r} is shared by the operator; only the admin key may "
                        f"delete it")
    await delete_template(eng, name)
    return Response(status_code=204)


@router.post("/prune")
async def prune(eng: EngineDep, who: PrincipalDep) -> dict[str, Any]:
    """Delete your build-cache layers that no template and no sandbox uses."""
    return {"removed": await prune_cache(eng, who.tenant, everyone=who.admin)}


async def _receive(request: Request, path: Path) -> None:
    size = 0
    with open(path, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD:
                raise InvalidRequest(f"the upload is larger than {MAX_UPLOAD >> 20} MiB")
            f.write(chunk)


def _workspace(eng: Any) -> Path:
    path = eng.config.data_dir / "builds" / f"{time.time_ns():x}"
    path.mkdir(parents=True, mode=0o700)
    return path


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


@router.post("/build", response_class=StreamingResponse,
             responses={200: {"content": {NDJSON: {}}, "description": "build events"}})
async def build_template(
    request: Request, eng: EngineDep, who: PrincipalDep, name: NameQuery,
    dockerfile: Annotated[str, Query(max_length=4096, description="its path in the context")]
    = "Dockerfile",
    network: Annotated[str, Query(max_length=65536, description='"none" or a JSON egress '
                                  'policy for RUN steps')] = "none",
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
    work = _workspace(eng)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    try:
        await _receive(request, work / "context.tar")
        context = work / "context"
        context.mkdir()
        await asyncio.to_thread(unpack, work / "context.tar", context)
        (work / "context.tar").unlink()
        text = await asyncio.to_thread(_read_dockerfile, context, dockerfile)
        build = TemplateBuild(eng, text, name, context, owner=owner,
                              may_use=lambda info: may_use(who, info), emit=queue.put_nowait,
                              network=policy)
        build.check()
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


async def _events(queue: "asyncio.Queue[dict[str, Any] | None]",
                  task: "asyncio.Task[dict[str, Any]]") -> AsyncIterator[bytes]:
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
            yield _line({"type": "template", "template": task.result()})
        except EngineError as exc:
            yield _line({"type": "error", "code": exc.code, "message": exc.message})
        except Exception as exc:  # noqa: BLE001 - the stream has started; report, do not crash
            log.exception("template build failed")
            yield _line({"type": "error", "code": "internal",
                         "message": f"internal error ({type(exc).__name__})"})
    finally:
        if not task.done():  # the client went away: cancel; the task cleans up after itself
            task.cancel()


@router.post("/import", status_code=201, response_model=TemplateInfo)
async def import_template(request: Request, eng: EngineDep, who: PrincipalDep,
                          name: NameQuery, public: bool = False) -> dict[str, Any]:
    """Make a template from the body: an OCI image layout (as a tar) or a ``docker save``
    archive. The image must hold python3 (the sandbox agent runs on it)."""
    owner = _owner(who, public)
    work = _workspace(eng)
    try:
        await _receive(request, work / "image.tar")
        info = await asyncio.to_thread(import_image, eng.images, name, work / "image.tar",
                                       owner=owner)
    except ImageExists as exc:
        raise Conflict(str(exc)) from None
    except ImageError as exc:
        raise InvalidRequest(str(exc)) from None
    finally:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, work)
    return template_json(info)

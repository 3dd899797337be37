"""envd's plain HTTP routes: ``/health`` and ``/files`` (download, multipart and raw upload)."""

from __future__ import annotations

import zlib
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from ...models import EntryInfo, check_path
from ...engine import EngineError
from . import gate
from .gate import E2BError

router = APIRouter(prefix="/e2b")
PathQ = Annotated[str | None, Query(max_length=4096)]
UserQ = Annotated[str | None, Query(min_length=1, max_length=64)]
CHUNK = 1 << 20


@router.get("/health")
async def health(request: Request) -> Response:
    """The control plane's liveness, or (with ``E2b-Sandbox-Id``) the sandbox's: 204 when it
    runs, 502 when it is gone or paused. No token needed, as on E2B."""
    sandbox_id = request.headers.get("e2b-sandbox-id")
    if sandbox_id is None:
        return JSONResponse({"status": "ok"})
    try:
        state: str | None = (await gate.engine(request).sandboxes.get(sandbox_id)).state
    except EngineError:  # missing (or a malformed id): not running
        state = None
    if state != "running":
        raise gate.not_running(sandbox_id, state)
    return Response(status_code=204)


async def _target(request: Request, op: str) -> gate.Target:
    """A signed URL's sandbox, else the one named by the headers."""
    if "signature" in request.query_params:
        return await gate.signed_target(request, op)
    return await gate.target(request)


def _path(path: str | None) -> str:
    if not path:
        raise E2BError(400, "give the file's path in the 'path' query parameter")
    try:
        return check_path(path)
    except ValueError as exc:
        raise E2BError(400, str(exc)) from None


@router.get("/files")
async def download(request: Request, path: PathQ = None, username: UserQ = None) -> StreamingResponse:
    """The file's bytes, streamed (404 missing, 400 a directory)."""
    where = await _target(request, "read")
    chunks = await where.engine.files.read(where.sandbox_id, _path(path), username)
    return StreamingResponse(chunks, media_type="application/octet-stream")


async def _gunzip(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        async for chunk in chunks:
            yield inflate.decompress(chunk)
        yield inflate.flush()
    except zlib.error as exc:
        raise E2BError(400, f"the body is not valid gzip: {exc}") from None


async def _parts(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


def _uploaded(entry: EntryInfo) -> dict[str, Any]:
    return {"path": entry.path, "name": entry.name, "type": "file"}


@router.post("/files")
async def upload(request: Request, path: PathQ = None, username: UserQ = None) -> JSONResponse:
    """Write files: ``multipart/form-data`` parts named ``file`` (each part's filename is its
    path) or a raw ``application/octet-stream`` body to ``path`` (gzip allowed). Parents are
    created; existing files are replaced."""
    where = await _target(request, "write")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    written = []
    if kind == "multipart/form-data":
        async with request.form(max_files=1000) as form:
            files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
            if not files:
                raise E2BError(400, "a multipart upload needs parts named 'file'")
            for part in files:
                target = _path(path if len(files) == 1 and path else part.filename)
                written.append(
                    await where.engine.files.write(where.sandbox_id, target, _parts(part), user=username)
                )
    elif kind in ("application/octet-stream", ""):
        chunks: AsyncIterator[bytes] = request.stream()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            chunks = _gunzip(chunks)
        written.append(await where.engine.files.write(where.sandbox_id, _path(path), chunks, user=username))
    else:
        raise E2BError(
            400, f"unsupported content type {kind!r}: send multipart/form-data or application/octet-stream"
        )
    return JSONResponse([_uploaded(e) for e in written])

"""Toolbox files: ``/daytona/toolbox/{sandboxId}/files...``, resolved by the agent inside the
sandbox. Relative paths are taken from the sandbox user's home; ``..`` segments are refused."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field

from ...engine import EngineError
from ...models import EntryInfo, check_path
from ._base import FILE_CODES, TOOLBOX, ControlDep, DaytonaError, FileRoute, ToolboxSandbox
from ._base import error_body
from .argv import run
from .file_urls import FileUrlSandbox
from .upload import MAX_FILES, Writer, stream_upload
from .wire import Body

router = APIRouter(prefix=TOOLBOX + "/{sandboxId}/files", route_class=FileRoute, tags=["daytona toolbox"])
PathQ = Annotated[str, Query(min_length=1, max_length=4096)]


def path_of(path: str) -> str:
    try:
        return check_path(path)
    except ValueError as exc:
        raise DaytonaError(400, str(exc), "INVALID_FILE_PATH") from None


def file_info(entry: EntryInfo) -> dict[str, Any]:
    """A Daytona FileInfo for a Stockade directory entry."""
    modified = datetime.fromtimestamp(entry.modified_time, timezone.utc)
    return {
        "name": entry.name,
        "path": entry.path,
        "isDir": entry.type == "dir",
        "size": entry.size,
        "mode": entry.permissions,
        "permissions": f"{entry.mode:04o}",
        "owner": entry.owner,
        "group": entry.group,
        "modTime": modified.strftime("%Y-%m-%d %H:%M:%S %z"),
        "modifiedAt": modified.isoformat().replace("+00:00", "Z"),
    }


@router.get("")
async def list_files(
    sandbox: ToolboxSandbox, ctl: ControlDep, path: PathQ = ".", depth: Annotated[int, Query(ge=1, le=32)] = 1
) -> list[dict[str, Any]]:
    return [file_info(e) for e in await ctl.engine.files.list(sandbox, path_of(path), depth=depth)]


@router.get("/info")
async def get_file_info(sandbox: ToolboxSandbox, ctl: ControlDep, path: PathQ) -> dict[str, Any]:
    return file_info(await ctl.engine.files.stat(sandbox, path_of(path)))


@router.delete("", status_code=204)
async def delete_file(
    sandbox: ToolboxSandbox, ctl: ControlDep, path: PathQ, recursive: bool = False
) -> Response:
    """Remove a file; a directory only with ``recursive=true``."""
    path = path_of(path)
    if not recursive:
        if (await ctl.engine.files.stat(sandbox, path)).type == "dir":
            raise DaytonaError(
                400, f"{path} is a directory: delete it with recursive=true", "INVALID_FILE_PATH"
            )
    await ctl.engine.files.remove(sandbox, path)
    return Response(status_code=204)


@router.post("/folder", status_code=201)
async def create_folder(
    sandbox: ToolboxSandbox,
    ctl: ControlDep,
    path: PathQ,
    mode: Annotated[str | None, Query(pattern=r"^[0-7]{3,4}$")] = None,
) -> Response:
    """Create a directory and its parents (an existing one is fine), with ``mode`` if given."""
    await ctl.engine.files.make_dir(sandbox, path_of(path))
    if mode:
        await set_permissions(sandbox, ctl, path, mode)
    return Response(status_code=201)


Account = Annotated[str | None, Query(pattern=r"^([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$")]


@router.post("/permissions")
async def set_permissions(
    sandbox: ToolboxSandbox,
    ctl: ControlDep,
    path: PathQ,
    mode: Annotated[str | None, Query(pattern=r"^[0-7]{3,4}$")] = None,
    owner: Account = None,
    group: Account = None,
) -> Response:
    """``chmod`` and ``chown`` the file, as the sandbox's root (as Daytona's daemon does)."""
    target = (await ctl.engine.files.stat(sandbox, path_of(path))).path
    if owner or group:
        who = f"{owner or ''}{':' + group if group else ''}"
        await run(ctl.engine, sandbox, ["chown", "-h", "--", who, target], "chown", user="root")
    if mode:
        await run(ctl.engine, sandbox, ["chmod", "--", mode, target], "chmod", user="root")
    return Response(status_code=200)


@router.post("/move")
async def move_file(sandbox: ToolboxSandbox, ctl: ControlDep, source: PathQ, destination: PathQ) -> Response:
    await ctl.engine.files.rename(sandbox, path_of(source), path_of(destination))
    return Response(status_code=200)


@router.get("/download")
async def download_file(sandbox: FileUrlSandbox, ctl: ControlDep, path: PathQ) -> StreamingResponse:
    """The file's bytes (with the bearer token, or through a signed URL)."""
    chunks = await ctl.engine.files.read(sandbox, path_of(path))
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.post("/bulk-upload")
async def bulk_upload(sandbox: ToolboxSandbox, ctl: ControlDep, request: Request) -> Response:
    """Write every ``files[i].file`` to ``files[i].path`` (parents made, files replaced),
    streamed into the sandbox as the body arrives."""
    await stream_upload(request, _writer(ctl, sandbox), path_of)
    return Response(status_code=200)


@router.post("/upload-v2")
async def upload_v2(sandbox: FileUrlSandbox, ctl: ControlDep, request: Request, path: PathQ) -> Response:
    """Write the multipart part ``file`` to ``path`` (bearer token or signed URL)."""
    await stream_upload(request, _writer(ctl, sandbox), path_of, single=path_of(path))
    return Response(status_code=200)


def _writer(ctl: ControlDep, sandbox: str) -> Writer:
    async def write(path: str, chunks: AsyncIterator[bytes]) -> Any:
        return await ctl.engine.files.write(sandbox, path, chunks)

    return write


class DownloadRequest(Body):
    paths: list[str] = Field(min_length=1, max_length=MAX_FILES)


def _part_headers(boundary: str, name: str, path: str, content_type: str, length: int | None = None) -> bytes:
    quoted = path.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")
    lines = [
        f"--{boundary}",
        f'Content-Disposition: form-data; name="{name}"; filename="{quoted}"',
        f"Content-Type: {content_type}",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _error_part(boundary: str, path: str, status: int, message: str, code: str | None) -> bytes:
    body = json.dumps(error_body(status, message, code)).encode()
    return _part_headers(boundary, "error", path, "application/json", len(body)) + body + b"\r\n"


@router.post("/bulk-download")
async def bulk_download(sandbox: ToolboxSandbox, ctl: ControlDep, body: DownloadRequest) -> StreamingResponse:
    """A multipart stream: one ``file`` part per readable path (filename = the path as asked)
    or an ``error`` part saying why not."""
    boundary = secrets.token_hex(16)
    eng = ctl.engine

    async def parts() -> AsyncIterator[bytes]:
        for asked in body.paths:
            try:
                path = path_of(asked)
                entry = await eng.files.stat(sandbox, path)
                if entry.type == "dir":
                    raise DaytonaError(400, f"{path} is a directory", "INVALID_FILE_PATH")
                chunks = await eng.files.read(sandbox, path)
            except DaytonaError as exc:
                yield _error_part(boundary, asked, exc.status, exc.message, exc.code)
                continue
            except EngineError as exc:
                yield _error_part(
                    boundary, asked, exc.status, exc.message, FILE_CODES.get(exc.code, "FILE_READ_FAILED")
                )
                continue
            yield _part_headers(boundary, "file", asked, "application/octet-stream", entry.size)
            async for chunk in chunks:
                yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return StreamingResponse(parts(), media_type=f"multipart/form-data; boundary={boundary}")

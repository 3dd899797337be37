"""envd's ``filesystem.Filesystem`` service over Connect, onto the agent's file calls."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from ...engine import NotFound
from ...models import EntryInfo
from . import gate
from .connect import ConnectError, Message, timestamp, unary_request

router = APIRouter(prefix="/e2b/filesystem.Filesystem")
FILE_TYPES = {"file": "FILE_TYPE_FILE", "dir": "FILE_TYPE_DIRECTORY", "symlink": "FILE_TYPE_SYMLINK"}
Path = Field(min_length=1, max_length=4096)


class PathRequest(Message):
    path: str = Path


class ListRequest(PathRequest):
    depth: int = Field(default=1, ge=0, le=32)


class MoveRequest(Message):
    source: str = Path
    destination: str = Path


def entry(info: EntryInfo) -> dict[str, Any]:
    """A Stockade file entry as envd's ``EntryInfo``."""
    rendered = {
        "name": info.name,
        "type": FILE_TYPES.get(info.type, "FILE_TYPE_UNSPECIFIED"),
        "path": info.path,
        "size": str(info.size),
        "mode": info.mode,
        "permissions": info.permissions,
        "owner": info.owner,
        "group": info.group,
        "modifiedTime": timestamp(info.modified_time),
    }
    if info.symlink_target:
        rendered["symlinkTarget"] = info.symlink_target
    return rendered


@router.post("/Stat")
async def stat(request: Request) -> JSONResponse:
    where = await gate.target(request)
    body = await unary_request(request, PathRequest)
    found = await where.engine.files.stat(where.sandbox_id, body.path, gate.rpc_user(request))
    return JSONResponse({"entry": entry(found)})


@router.post("/MakeDir")
async def make_dir(request: Request) -> JSONResponse:
    """Create a directory and its parents; ``already_exists`` if it was there."""
    where = await gate.target(request)
    body = await unary_request(request, PathRequest)
    made = await where.engine.files.make_dir(where.sandbox_id, body.path, gate.rpc_user(request))
    if not made.created:
        raise ConnectError("already_exists", f"directory {made.entry.path} already exists")
    return JSONResponse({"entry": entry(made.entry)})


@router.post("/Move")
async def move(request: Request) -> JSONResponse:
    where = await gate.target(request)
    body = await unary_request(request, MoveRequest)
    moved = await where.engine.files.rename(
        where.sandbox_id, body.source, body.destination, gate.rpc_user(request)
    )
    return JSONResponse({"entry": entry(moved)})


@router.post("/ListDir")
async def list_dir(request: Request) -> JSONResponse:
    """Entries down to ``depth`` levels (0 means 1), sorted by path."""
    where = await gate.target(request)
    body = await unary_request(request, ListRequest)
    found = await where.engine.files.list(
        where.sandbox_id, body.path, gate.rpc_user(request), depth=max(body.depth, 1)
    )
    return JSONResponse({"entries": [entry(e) for e in sorted(found, key=lambda e: e.path)]})


@router.post("/Remove")
async def remove(request: Request) -> JSONResponse:
    """Remove a file or a directory tree; a missing path is not an error."""
    where = await gate.target(request)
    body = await unary_request(request, PathRequest)
    try:
        await where.engine.files.remove(where.sandbox_id, body.path, gate.rpc_user(request))
    except NotFound:
        pass
    return JSONResponse({})


@router.post("/{method}")
async def unserved(request: Request, method: str) -> JSONResponse:
    """Any other method (watches are in watch.py, registered before this)."""
    await gate.target(request)
    raise ConnectError(
        "unimplemented", f"filesystem.Filesystem/{method} is not served by Stockade's E2B adapter"
    )

"""Files in a sandbox, resolved by the agent inside it: read and write streamed, and the rest."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator

from ..deps import EngineDep
from ..models import EntryInfo, MakeDirResult, PathBody, RenameBody, check_path

router = APIRouter(prefix="/sandboxes/{sandbox_id}/files", tags=["files"])
PathQ = Annotated[str, Query(min_length=1, max_length=4096), AfterValidator(check_path)]
UserQ = Annotated[str | None, Query(min_length=1, max_length=64)]


@router.get(
    "", response_class=StreamingResponse, responses={200: {"content": {"application/octet-stream": {}}}}
)
async def download(sandbox_id: str, path: PathQ, eng: EngineDep, user: UserQ = None) -> StreamingResponse:
    """The file's bytes, streamed."""
    chunks = await eng.files.read(sandbox_id, path, user)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.put("", response_model=EntryInfo)
async def upload(
    sandbox_id: str,
    path: PathQ,
    request: Request,
    eng: EngineDep,
    user: UserQ = None,
    mode: Annotated[int | None, Query(ge=0, le=0o7777)] = None,
) -> EntryInfo:
    """Replace the file with the request body (streamed; atomic once complete)."""
    return await eng.files.write(sandbox_id, path, request.stream(), user=user, mode=mode)


@router.get("/stat", response_model=EntryInfo)
async def stat(sandbox_id: str, path: PathQ, eng: EngineDep, user: UserQ = None) -> EntryInfo:
    return await eng.files.stat(sandbox_id, path, user)


@router.get("/list", response_model=list[EntryInfo])
async def list_dir(
    sandbox_id: str,
    path: PathQ,
    eng: EngineDep,
    user: UserQ = None,
    depth: Annotated[int, Query(ge=1, le=32)] = 1,
) -> list[EntryInfo]:
    return await eng.files.list(sandbox_id, path, user, depth)


@router.post("/mkdir", response_model=MakeDirResult)
async def make_dir(sandbox_id: str, body: PathBody, eng: EngineDep) -> MakeDirResult:
    return await eng.files.make_dir(sandbox_id, body.path, body.user)


@router.delete("", status_code=204)
async def remove(sandbox_id: str, path: PathQ, eng: EngineDep, user: UserQ = None) -> Response:
    await eng.files.remove(sandbox_id, path, user)
    return Response(status_code=204)


@router.post("/rename", response_model=EntryInfo)
async def rename(sandbox_id: str, body: RenameBody, eng: EngineDep) -> EntryInfo:
    return await eng.files.rename(sandbox_id, body.src, body.dst, body.user)

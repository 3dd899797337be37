"""Code execution in a sandbox: stateful contexts (Jupyter kernels, bash) and streamed cells."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ...engine.interpreter import CodeContexts
from ..deps import EngineDep
from ..streaming import NDJSON, stream_events

router = APIRouter(prefix="/sandboxes/{sandbox_id}/code", tags=["code"])


async def contexts(eng: EngineDep) -> CodeContexts:
    """The engine's code contexts (async: no thread hop)."""
    return eng.code


ContextsDep = Annotated[CodeContexts, Depends(contexts)]
Language = Field(default=None, min_length=1, max_length=32, pattern=r"^[A-Za-z][A-Za-z0-9+_.-]*$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateContext(Strict):
    language: str | None = Language
    cwd: str | None = Field(default=None, min_length=1, max_length=4096, pattern=r"^/")


class CodeContext(BaseModel):
    id: str
    language: str
    cwd: str
    default: bool


class Execute(Strict):
    code: str = Field(max_length=8 << 20)
    language: str | None = Language
    context_id: str | None = Field(default=None, min_length=1, max_length=64)
    timeout: float | None = Field(default=None, gt=0, le=86400)
    envs: dict[str, str] | None = Field(default=None, max_length=1000)


@router.post(
    "/execute",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": "execution events"}},
)
async def execute(sandbox_id: str, body: Execute, ctx: ContextsDep) -> StreamingResponse:
    """Run a cell and stream its events, one JSON object a line: ``start`` (context_id),
    ``stdout``/``stderr`` (text), ``result`` (data: MIME bundle, is_main_result), ``error``
    (name, value, traceback), then ``end`` (status, execution_count). If Stockade itself fails
    mid-stream, the last line is ``failure`` (code, message).

    Without ``context_id`` the sandbox's default context for ``language`` (python) is used,
    started on first use."""
    events = await ctx.execute(
        sandbox_id,
        body.code,
        language=body.language,
        context_id=body.context_id,
        timeout=body.timeout,
        envs=body.envs,
    )
    return await stream_events(events, failure="failure")


@router.post("/contexts", response_model=CodeContext, status_code=201)
async def create_context(sandbox_id: str, body: CreateContext, ctx: ContextsDep) -> dict[str, Any]:
    """Start a context with its own state, language (default python) and working directory."""
    return await ctx.create(sandbox_id, body.language, body.cwd)


@router.get("/contexts", response_model=list[CodeContext])
async def list_contexts(sandbox_id: str, ctx: ContextsDep) -> list[dict[str, Any]]:
    return await ctx.list(sandbox_id)


@router.post("/contexts/{context_id}/restart", response_model=CodeContext)
async def restart_context(sandbox_id: str, context_id: str, ctx: ContextsDep) -> dict[str, Any]:
    """Restart the context's interpreter: same id, language and cwd; its state is lost."""
    return await ctx.restart(sandbox_id, context_id)


@router.delete("/contexts/{context_id}", status_code=204)
async def remove_context(sandbox_id: str, context_id: str, ctx: ContextsDep) -> None:
    await ctx.remove(sandbox_id, context_id)

"""Daytona compatibility: the REST API under ``/daytona/api`` and the per-sandbox toolbox under
``/daytona/toolbox/{sandboxId}``, so that unmodified ``daytona`` SDK code runs against Stockade
(docs/compat-daytona.md)."""

from fastapi import APIRouter

from . import (
    file_urls,
    files,
    git,
    gitconfig,
    interpreter,
    lsp,
    previews,
    process,
    pty,
    sandboxes,
    search,
    secrets,
    sessions,
    snapshots,
    system,
    unsupported,
    volumes,
)

router = APIRouter()
# unsupported comes last: it answers whatever no other module serves.
for _module in (
    sandboxes,
    previews,
    file_urls,
    snapshots,
    volumes,
    secrets,
    files,
    search,
    process,
    sessions,
    pty,
    interpreter,
    git,
    gitconfig,
    system,
    lsp,
    unsupported,
):
    router.include_router(_module.router, include_in_schema=False)

__all__ = ["router"]

"""Daytona compatibility: the REST API under ``/daytona/api`` and the per-sandbox toolbox under
``/daytona/toolbox/{sandboxId}``, so that unmodified ``daytona`` SDK code runs against Stockade
(docs/compat-daytona.md)."""

from fastapi import APIRouter

from . import (files, git, interpreter, previews, process, pty, sandboxes, search, sessions,
               snapshots, system, unsupported, volumes)

router = APIRouter()
for _module in (sandboxes, previews, snapshots, volumes, files, search, process, sessions, pty,
                interpreter, git, system, unsupported):  # unsupported last: it catches the rest
    router.include_router(_module.router, include_in_schema=False)

__all__ = ["router"]

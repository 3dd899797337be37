"""Daytona compatibility: the REST API under ``/daytona/api`` and the per-sandbox toolbox under
``/daytona/toolbox/{sandboxId}``, so that unmodified ``daytona`` SDK code runs against Stockade
(docs/compat-daytona.md)."""

from fastapi import APIRouter

from . import (files, git, interpreter, process, pty, sandboxes, search, sessions, snapshots,
               system, volumes)

router = APIRouter()
for _module in (sandboxes, snapshots, volumes, files, search, process, sessions, pty,
                interpreter, git, system):
    router.include_router(_module.router, include_in_schema=False)

__all__ = ["router"]

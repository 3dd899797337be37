"""Dependencies shared by the routes.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, which costs a
thread hop on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..engine import Engine, EngineError, InvalidRequest
from .auth import Principal
from .control import Control, ControlPlane


async def engine(request: Request) -> Engine:
    """The engine this server drives."""
    return request.app.state.engine  # type: ignore[no-any-return]


async def control(request: Request) -> Control:
    """The ownership, quota and audit layer in front of the engine."""
    return request.app.state.control  # type: ignore[no-any-return]


async def principal(request: Request) -> Principal:
    """Who is calling (set by the auth middleware)."""
    return request.state.principal  # type: ignore[no-any-return]


async def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


class Forbidden(EngineError):
    """The key is valid but not allowed to do this (only the admin key manages tenants)."""

    code = "forbidden"
    status = 403


async def plane(request: Request) -> ControlPlane:
    """The remote-mode control plane; keys and tenants do not exist in local mode."""
    found = request.app.state.control
    if not isinstance(found, ControlPlane):
        raise InvalidRequest(
            "API keys and tenants exist only on a remote server "
            "('stockade serve' on TCP); this is the keyless local daemon"
        )
    return found


async def admin(request: Request) -> Principal:
    """The caller, who must hold the admin key."""
    who: Principal = request.state.principal
    if not who.admin:
        raise Forbidden("only the admin key may do this")
    return who


EngineDep = Annotated[Engine, Depends(engine)]
ControlDep = Annotated[Control, Depends(control)]
PlaneDep = Annotated[ControlPlane, Depends(plane)]
PrincipalDep = Annotated[Principal, Depends(principal)]
AdminDep = Annotated[Principal, Depends(admin)]
RequestIdDep = Annotated[str | None, Depends(request_id)]

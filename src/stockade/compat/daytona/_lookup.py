"""Which sandbox a ``/daytona/api/sandbox/{sandboxIdOrName}/...`` call is about, and how to
answer with it (the caller's Daytona Sandbox object)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from ...models import SandboxInfo
from ...server.auth import Principal
from ...server.control import Control
from . import render
from ._base import ControlDep, PrincipalDep, base_url, not_found
from .wire import NAME_KEY


async def visible(ctl: Control, who: Principal) -> list[SandboxInfo]:
    """The caller's sandboxes."""
    return ctl.visible(who, await ctl.engine.sandboxes.list())


async def resolve(sandboxIdOrName: str, ctl: ControlDep, who: PrincipalDep) -> str:  # noqa: N803
    """The id of the caller's sandbox named or numbered ``sandboxIdOrName``."""
    if who.may_see(ctl.owner(sandboxIdOrName)):
        return sandboxIdOrName
    for info in await visible(ctl, who):
        if info.metadata.get(NAME_KEY) == sandboxIdOrName:
            return info.id
    raise not_found(sandboxIdOrName)


SandboxId = Annotated[str, Depends(resolve)]


class Answer:
    """The call's context (caller, control plane, request id, address) and its answer: a
    Stockade sandbox rendered as the caller's Daytona Sandbox."""

    def __init__(self, request: Request, ctl: ControlDep, who: PrincipalDep) -> None:
        self.request, self.ctl, self.who = request, ctl, who
        self.request_id: str | None = getattr(request.state, "request_id", None)

    @property
    def base(self) -> str:
        return base_url(self.request)

    def __call__(self, info: SandboxInfo, *, full: bool = True, state: str | None = None) -> dict[str, Any]:
        return render.sandbox(info, self.who.tenant, self.base, full=full, state=state)


AnswerDep = Annotated[Answer, Depends(Answer)]

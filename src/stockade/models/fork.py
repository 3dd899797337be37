"""Fork: the request and the answer of ``POST /sandboxes/{id}/fork`` (docs/fork.md)."""

from __future__ import annotations

from pydantic import Field

from ._base import Request, Result
from .sandboxes import SandboxInfo

#: Most copies one fork call makes (each is a whole sandbox, quota-checked one by one).
MAX_FORK = 16


class ForkSpec(Request):
    """How many copies, and whether their processes and memory must come along."""

    count: int = Field(
        default=1, ge=1, le=MAX_FORK, strict=True, description=f"copies to make, 1 to {MAX_FORK}"
    )
    memory: bool | None = Field(
        default=None,
        strict=True,
        description="copy processes and memory too: null = if the tier can (gvisor), true = "
        "required (409 'unsupported' on a tier that cannot: container), false = "
        "the filesystem only",
    )


class ForkResult(Result):
    """The copies, running; ``memory`` says whether their processes and memory were copied
    (else they booted fresh processes on a copy of the source's files)."""

    items: list[SandboxInfo]
    memory: bool

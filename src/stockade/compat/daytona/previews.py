"""``/daytona/api/sandbox/{id}/ports/...``: preview links are Stockade's port proxy
(``/sandboxes/{id}/ports/{port}``), opened by a sandbox access token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from . import render
from ._base import API, DaytonaError, DaytonaRoute
from ._lookup import Answer, AnswerDep, SandboxId

#: Seconds a preview-url token lives (it also dies with the sandbox).
PREVIEW_TTL = 3600.0
router = APIRouter(prefix=API + "/sandbox/{sandboxIdOrName}", route_class=DaytonaRoute, tags=["daytona"])


def _preview(answer: Answer, sandbox_id: str, port: int, ttl: float) -> tuple[str, str]:
    """The proxy's URL of ``port`` and an access token for the sandbox's ports."""
    if not 1 <= port <= 65535:
        raise DaytonaError(400, f"port must be between 1 and 65535, not {port}")
    token, _ = answer.request.app.state.access_tokens.mint(sandbox_id, ttl)
    return f"{answer.base}/sandboxes/{sandbox_id}/ports/{port}", token


@router.get("/ports/{port}/preview-url")
async def preview_url(sandbox_id: SandboxId, port: int, answer: AnswerDep) -> dict[str, Any]:
    """The port through Stockade's proxy: send the token (or the API key) as
    ``Authorization: Bearer``."""
    url, token = _preview(answer, sandbox_id, port, PREVIEW_TTL)
    return {"sandboxId": sandbox_id, "url": url, "token": token}


@router.get("/ports/{port}/signed-preview-url")
async def signed_preview_url(
    sandbox_id: SandboxId,
    port: int,
    answer: AnswerDep,
    expiresInSeconds: Annotated[int, Query(ge=1, le=86400)] = 60,  # noqa: N803
) -> dict[str, Any]:
    """A URL that opens the port without any header (the token rides in it, then a cookie)."""
    url, token = _preview(answer, sandbox_id, port, expiresInSeconds)
    return {"sandboxId": sandbox_id, "port": port, "token": token, "url": f"{url}/?stockade_token={token}"}


@router.get("/toolbox-proxy-url")
async def toolbox_proxy_url(sandbox_id: SandboxId, answer: AnswerDep) -> dict[str, str]:
    return {"url": render.sandbox_toolbox(answer.base)}

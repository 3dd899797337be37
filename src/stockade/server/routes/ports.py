"""Port access tokens: a link to a sandbox's ports that a browser can use without an API key.

The ports themselves are served by the proxy middleware (``server/proxy.py``), before routing:
``/sandboxes/{id}/ports/{port}/...`` and ``{port}-{id}.{proxy_domain}``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ..access import DEFAULT_TTL, MAX_TTL, AccessTokens
from ..deps import EngineDep
from ..models import Strict

router = APIRouter(prefix="/sandboxes/{sandbox_id}", tags=["ports"])


class AccessTokenRequest(Strict):
    expires_in: float = Field(
        default=DEFAULT_TTL,
        ge=1,
        le=MAX_TTL,
        description="seconds the token lives (it dies with the sandbox)",
    )


class AccessToken(BaseModel):
    token: str = Field(
        description="send as '?stockade_token=', the 'stockade_token' cookie, or 'Authorization: Bearer'"
    )
    expires_at: float
    url_path: str = Field(description="a path that opens port {port} in a browser")


@router.post("/access-token", response_model=AccessToken, status_code=201)
async def create_access_token(
    sandbox_id: str, request: Request, eng: EngineDep, body: AccessTokenRequest | None = None
) -> AccessToken:
    """A token that opens every port of this sandbox through the proxy, and only this
    sandbox's, until it expires or the sandbox ends."""
    await eng.sandboxes.get(sandbox_id)
    tokens: AccessTokens = request.app.state.access_tokens
    token, expires_at = tokens.mint(sandbox_id, (body or AccessTokenRequest()).expires_in)
    return AccessToken(
        token=token,
        expires_at=expires_at,
        url_path=f"/sandboxes/{sandbox_id}/ports/{{port}}/?stockade_token={token}",
    )

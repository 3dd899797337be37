"""The dashboard's sign-in links: a key holder asks for a one-time link, and a browser that
opens it is signed in as that key without the key ever appearing in a URL."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request

from ..auth import bearer
from ..deps import PrincipalDep
from ..models import SignInLink

router = APIRouter(tags=["dashboard"])


@router.post("/dashboard/links", status_code=201, response_model=SignInLink)
async def sign_in_link(request: Request, who: PrincipalDep) -> SignInLink:
    """A link that signs a browser in to the dashboard as you (tenant key: your tenant; admin:
    everyone), once, within 10 minutes. On the local daemon it names the daemon's own
    dashboard port; elsewhere, append ``path`` to the address you reach the server at."""
    state = request.app.state
    key = state.daemon_key or bearer(request.scope["headers"])  # local mode: the daemon's own
    token, expires_at = state.ui_sessions.link(key, who.tenant, who.admin, local=state.daemon_key is not None)
    path = "/ui/login?" + urlencode({"token": token})
    base = state.dashboard_url
    return SignInLink(path=path, url=base.rstrip("/") + path if base else None, expires_at=expires_at)

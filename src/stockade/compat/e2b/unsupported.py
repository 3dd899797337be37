"""E2B routes that the SDKs call but Stockade does not serve (yet): each answers 501 with
E2B's error body saying what is missing and what to do instead, so the SDK raises its
exception for that call with a message a user can act on (not a misleading "not found").
Authentication still comes first: without a valid key the answer is 401."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ...server.auth import Principal
from . import gate
from .gate import E2BError

router = APIRouter(prefix="/e2b")
Who = Annotated[Principal, Depends(gate.principal)]

SECRETS = (
    "E2B secrets are not supported by Stockade's E2B adapter: make Stockade secrets "
    "(bound to hosts) with Stockade's own API (POST /secrets) and give them to a "
    "sandbox with metadata {'stockade.secrets': 'NAME,...'} (docs/compat-e2b.md)"
)
#: (methods, path, what is not supported and why / what instead)
ROUTES: list[tuple[list[str], str, str]] = [
    (["GET"], "/sandboxes/{sandbox_id}/logs", "sandbox logs are not served by Stockade's E2B adapter"),
    (["GET"], "/v2/sandboxes/{sandbox_id}/logs", "sandbox logs are not served by Stockade's E2B adapter"),
    (
        ["GET"],
        "/sandboxes/metrics",
        "metrics of several sandboxes at once are not served; ask each sandbox (get_metrics)",
    ),
    (["GET", "POST"], "/secrets", SECRETS),
    (["GET", "POST", "DELETE"], "/secrets/{secret_id}", SECRETS),
    (
        ["POST", "DELETE"],
        "/templates/tags",
        "template tags are not supported: Stockade templates have a name and no tags",
    ),
    (
        ["GET"],
        "/templates/{template_id}/tags",
        "template tags are not supported: Stockade templates have a name and no tags",
    ),
    (["GET"], "/templates/{template_id}/tags/{rest:path}", "template tags are not supported"),
    (
        ["POST"],
        "/v2/templates",
        "the v2 template build API is not served; use e2b >= 2.3 (Template.build, the v3 API)",
    ),
    (
        ["POST"],
        "/templates",
        "the v1 template build API (Dockerfile builds by the CLI) is not "
        "served; use Template.build or `stockade image build`",
    ),
    (
        ["GET", "POST", "PUT", "PATCH", "DELETE"],
        "/volumecontent/{volume_id}/{rest:path}",
        "the volume content API is not served: mount the volume in a sandbox "
        "(Sandbox.create(volume_mounts=...)) and use sandbox.files",
    ),
    (
        ["PATCH"],
        "/templates/{template_id}",
        "template settings (public) cannot be changed through E2B; templates belong to their tenant",
    ),
    (
        ["PATCH"],
        "/v2/templates/{template_id}",
        "template settings (public) cannot be changed through E2B; templates belong to their tenant",
    ),
]


def _add(methods: list[str], path: str, message: str) -> None:
    async def refuse(request: Request, who: Who) -> None:
        raise E2BError(501, message)

    router.add_api_route(
        path, refuse, methods=methods, status_code=501, name=f"unsupported {' '.join(methods)} {path}"
    )


for _methods, _path, _message in ROUTES:
    _add(_methods, _path, _message)

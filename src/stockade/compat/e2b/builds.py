"""E2B's template build API (``Template.build``, ``build_in_background``,
``get_build_status``) over ``engine.templates.builds``: request a build, upload the COPY files
by hash, start it, poll its status and logs. The template ID is the Stockade template name;
templates belong to the caller's tenant, and rebuilding a name replaces that tenant's template.

Upload URLs are signed (HMAC of tenant, hash and expiry under the server's token secret), as
the SDK sends the file to the URL with no API key."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from ...models import BuildStatus, NetworkPolicy
from ...server.auth import Principal
from . import gate
from .gate import E2BError
from .template_spec import HASH, BuildStart
from .wire import Loose

router = APIRouter(prefix="/e2b")
Who = Annotated[Principal, Depends(gate.principal)]
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
BUILD_ID = re.compile(r"^[0-9a-f]{16}$")
UPLOAD_TTL = 3600
#: RUN steps reach the internet, as in E2B's builds (and as any tenant's sandbox may with
#: ``allow_internet_access``); Stockade's policy still denies host and private ranges.
BUILD_NETWORK = NetworkPolicy(allow_out=["0.0.0.0/0"])


class NewTemplate(Loose):
    """``POST /v3/templates``: cpu, memory and disk sizes are not template properties in
    Stockade (a sandbox chooses them) and are ignored."""

    name: str | None = Field(default=None, max_length=128)
    alias: str | None = Field(default=None, max_length=128)
    tags: list[str] | None = Field(default=None, max_length=16)


def _name(raw: str | None, tags: list[str] | None) -> str:
    name, _, tag = (raw or "").partition(":")
    if tag or tags:
        raise E2BError(
            400,
            "template tags are not supported by Stockade; give a name "
            "without ':tag' (a rebuild replaces the template)",
        )
    if not NAME.fullmatch(name):
        raise E2BError(
            400,
            f"template name {name!r} must be 1-63 of a-z, 0-9, '.', '_', '-' "
            f"and start with a letter or digit",
        )
    return name


def _sign(request: Request, tenant: str, digest: str, expires: int) -> str:
    secret: bytes = request.app.state.main.state.access_tokens.secret
    return hmac.new(secret, f"e2b-upload\n{tenant}\n{digest}\n{expires}".encode(), hashlib.sha256).hexdigest()


@router.post("/v3/templates", status_code=202)
async def request_build(request: Request, who: Who, body: NewTemplate) -> JSONResponse:
    """Reserve a build: its ID and the template's (its name)."""
    name = _name(body.name or body.alias, body.tags)
    return JSONResponse(
        {
            "templateID": name,
            "buildID": secrets.token_hex(8),
            "public": False,
            "names": [name],
            "tags": [],
            "aliases": [name],
        },
        status_code=202,
    )


@router.get("/templates/{template_id}/files/{digest}", status_code=201)
async def file_link(request: Request, who: Who, template_id: str, digest: str) -> JSONResponse:
    """Whether the caller's tenant has the COPY file ``digest``; if not, where to PUT it."""
    if not HASH.fullmatch(digest):
        raise E2BError(400, "the files hash must be lowercase hex")
    if gate.engine(request).templates.builds.has_file(who.tenant, digest):
        return JSONResponse({"present": True}, status_code=201)
    expires = int(time.time()) + UPLOAD_TTL
    url = request.url_for("upload_file", digest=digest).include_query_params(
        tenant=who.tenant, expires=expires, signature=_sign(request, who.tenant, digest, expires)
    )
    return JSONResponse({"present": False, "url": str(url)}, status_code=201)


@router.put("/template-files/{digest}", name="upload_file")
async def upload_file(
    request: Request,
    digest: str,
    tenant: Annotated[str, Query(max_length=128)],
    expires: Annotated[int, Query(ge=0)],
    signature: Annotated[str, Query(max_length=128)],
) -> Response:
    """Store a COPY file (the tar the SDK sends) under its hash, for the signing tenant."""
    if not hmac.compare_digest(signature.encode(), _sign(request, tenant, digest, expires).encode()):
        raise E2BError(401, "invalid upload signature")
    if expires < time.time():
        raise E2BError(401, "the upload link has expired; request the build again")
    await gate.engine(request).templates.builds.save_file(tenant, digest, request.stream())
    return Response(status_code=201)


@router.post("/v2/templates/{template_id}/builds/{build_id}", status_code=202)
async def start_build(
    request: Request, who: Who, template_id: str, build_id: str, body: BuildStart
) -> Response:
    """Translate the template into a Dockerfile and start building it in the background."""
    if not BUILD_ID.fullmatch(build_id):
        raise E2BError(400, "buildID is not one that POST /v3/templates handed out")
    dockerfile, files = body.dockerfile()
    await gate.engine(request).templates.builds.start(
        dockerfile,
        _name(template_id, None),
        files,
        owner=who.tenant,
        visible=who.may_see,
        replace=True,
        build_id=build_id,
        network=BUILD_NETWORK,
    )
    return Response(status_code=202)


def _entry(at: float, level: str, message: str) -> dict[str, Any]:
    stamp = datetime.datetime.fromtimestamp(at, datetime.timezone.utc)
    return {"timestamp": stamp.isoformat().replace("+00:00", "Z"), "level": level, "message": message}


@router.get("/templates/{template_id}/builds/{build_id}/status")
async def build_status(
    request: Request,
    who: Who,
    template_id: str,
    build_id: str,
    logs_offset: Annotated[int, Query(alias="logsOffset", ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The build's status (building, ready, error) and up to ``limit`` log entries."""
    found: BuildStatus = gate.engine(request).templates.builds.status(build_id, who.may_see, logs_offset)
    if found.template != template_id:
        raise E2BError(404, f"build {build_id!r} is not a build of template {template_id!r}")
    entries = [_entry(e.at, e.level, e.message) for e in found.logs[:limit]]
    body: dict[str, Any] = {
        "templateID": found.template,
        "buildID": found.build_id,
        "status": found.status,
        "logs": [],
        "logEntries": entries,
    }
    if found.status == "error":
        body["reason"] = {"message": found.error or "the build failed"}
    return body

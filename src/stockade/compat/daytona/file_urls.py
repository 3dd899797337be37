"""Pre-signed file URLs: ``GET /sandbox/{id}/signing-key`` and ``POST .../signing-key/rotate``
hand the owner a per-sandbox key; the SDK signs ``files/download`` and ``files/upload-v2`` URLs
with it (``v1_`` + HMAC-SHA256 of ``v1:files:{METHOD}:{path}:{expires}``), and such a URL works
without a bearer token until it expires or the key is rotated.

The key is never stored: it is an HMAC of the sandbox id and a salt under the server's
access-token secret; rotating replaces the salt (kept with the sandbox's ownership row)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from ...server.control import Control
from ._base import API, ControlDep, DaytonaError, DaytonaRoute, not_found, owned, principal
from ._lookup import SandboxId

router = APIRouter(prefix=API + "/sandbox/{sandboxIdOrName}", route_class=DaytonaRoute, tags=["daytona"])
PREFIX = "v1_"


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def signing_key(request: Request, ctl: Control, sandbox_id: str) -> str:
    """The sandbox's current signing key."""
    secret: bytes = request.app.state.access_tokens.secret
    salt = await ctl.file_url_salt(sandbox_id)
    return "sk_" + _b64(
        hmac.new(secret, f"daytona-file-urls\n{sandbox_id}\n{salt}".encode(), hashlib.sha256).digest()
    )


def signature(key: str, method: str, path: str, expires: int) -> str:
    """What the SDK computes (``daytona._utils.file_url_signing``)."""
    canonical = f"v1:files:{method}:{path}:{expires}".encode()
    return PREFIX + _b64(hmac.new(key.encode(), canonical, hashlib.sha256).digest())


@router.get("/signing-key")
async def get_signing_key(sandbox_id: SandboxId, ctl: ControlDep, request: Request) -> str:
    return await signing_key(request, ctl, sandbox_id)


@router.post("/signing-key/rotate")
async def rotate_signing_key(sandbox_id: SandboxId, ctl: ControlDep, request: Request) -> str:
    """A new key: every URL signed with an earlier one stops working at once."""
    await ctl.rotate_file_url_salt(sandbox_id)
    return await signing_key(request, ctl, sandbox_id)


async def file_url_sandbox(
    request: Request,
    sandboxId: str,  # noqa: N803
    ctl: ControlDep,
    path: Annotated[str, Query(min_length=1, max_length=4096)],
    expires: Annotated[int | None, Query(ge=0)] = None,
    signature_: Annotated[str | None, Query(alias="signature", max_length=128)] = None,
) -> str:
    """The toolbox's sandbox for a file download or upload: the caller's own (bearer token),
    or any sandbox whose signed URL this is (no token)."""
    if signature_ is None:
        return owned(ctl, await principal(request, ctl), sandboxId)
    if ctl.owner(sandboxId) is None:
        raise not_found(sandboxId)
    if expires is None:
        raise DaytonaError(401, "a signed file URL needs its 'expires' parameter")
    if expires and expires < time.time():
        raise DaytonaError(401, "this signed file URL has expired: ask for a new one")
    key = await signing_key(request, ctl, sandboxId)
    if not hmac.compare_digest(signature(key, request.method, path, expires), signature_):
        raise DaytonaError(
            401, "invalid file URL signature (the URL was altered, or the sandbox's signing key was rotated)"
        )
    return sandboxId


FileUrlSandbox = Annotated[str, Depends(file_url_sandbox)]

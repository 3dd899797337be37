"""What Stockade does not serve of Daytona's API answers 501 naming the feature and why (404
for a path Daytona does not have either), in Daytona's error shape, after the same key and
ownership checks as every other call. Included last, so every served route wins."""

from __future__ import annotations

import re
from typing import NoReturn

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ._base import API, TOOLBOX, DaytonaError, DaytonaRoute, PrincipalDep, ControlDep, owned

#: (path pattern after the API or toolbox prefix, what the SDK calls it, why it is not served).
API_FEATURES: list[tuple[str, str, str]] = [
    (
        r"sandbox/[^/]+/(forks|parent|ancestors)",
        "fork lineage",
        "a fork's lineage is not kept here: list the sandboxes by a label instead",
    ),
    (
        r"sandbox/[^/]+/ssh-access|sandbox/ssh-access/.*",
        "SSH access",
        "SSH access is not supported: use the toolbox (exec, sessions, PTY)",
    ),
    (
        r"sandbox/[^/]+/secrets",
        "changing a sandbox's secrets",
        "a sandbox's secrets are fixed at create here (and their values are never returned): "
        "create a new sandbox with the secrets",
    ),
    (
        r"preview/.*",
        "preview keys",
        "per-sandbox preview keys are not supported: preview tokens are signed by the server",
    ),
    (
        r"sandbox/[^/]+/ports/[^/]+/signed-preview-url/[^/]+/expire",
        "expiring a signed preview",
        "a signed preview URL cannot be revoked early here; it ends at its own expiry",
    ),
    (
        r"(sandbox|snapshots)/[^/]+/build-logs(-url)?",
        "build logs",
        "builds finish while the create call waits, so there is no build to follow",
    ),
    (
        r"snapshots/[^/]+/deactivate",
        "deactivating a snapshot",
        "snapshots never go inactive here; delete it instead",
    ),
    (r"sandbox/[^/]+/backup", "backups", "backups are not supported: use archive or a snapshot"),
    (
        r"config|sandbox/[^/]+/telemetry/.*",
        "telemetry (metrics, logs and traces over time)",
        "telemetry is not served: use get_metrics_latest()",
    ),
    (
        r"warm-pools(/.*)?",
        "warm pools",
        "Daytona warm pools are not served: Stockade keeps its own warm pool",
    ),
    (
        r"object-storage/.*",
        "object storage",
        "images that copy local files (build contexts) are not supported: use RUN steps",
    ),
    (
        r"(docker-registry|runners|regions|organizations|users|api-keys|audit|jobs|webhooks)"
        r"(/.*)?",
        "administration",
        "Daytona's administration API is not served: manage keys and tenants with `stockade keys`",
    ),
]
TOOLBOX_FEATURES: list[tuple[str, str, str]] = [
    (r"computeruse/.*", "computer use", "computer use needs a desktop, which sandboxes here do not have"),
    (r"git/history", "git history", "not supported yet: run `git log` with process.exec"),
    (
        r"git/credentials",
        "stored git credentials",
        "credentials are not stored here: pass username and password to each clone, push or pull",
    ),
    (
        r"process/session/entrypoint(/.*)?",
        "the entrypoint session",
        "sandboxes here start idle: there is no entrypoint",
    ),
]
_API = [(re.compile(p + r"/?"), what, why) for p, what, why in API_FEATURES]
_TOOLBOX = [(re.compile(p + r"/?"), what, why) for p, what, why in TOOLBOX_FEATURES]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
router = APIRouter(route_class=DaytonaRoute)


def _answer(path: str, table: list[tuple[re.Pattern[str], str, str]]) -> NoReturn:
    for pattern, what, why in table:
        if pattern.fullmatch(path):
            raise DaytonaError(501, f"{what}: {why} (Stockade's Daytona API, docs/compat-daytona.md)")
    raise DaytonaError(404, f"no such Daytona API call: {path}")


@router.api_route(API + "/{path:path}", methods=METHODS, include_in_schema=False)
async def api_unsupported(path: str, request: Request, who: PrincipalDep) -> JSONResponse:
    return _answer(path, _API)


@router.api_route(TOOLBOX + "/{sandboxId}/{path:path}", methods=METHODS, include_in_schema=False)
async def toolbox_unsupported(
    sandboxId: str,
    path: str,
    ctl: ControlDep,  # noqa: N803
    who: PrincipalDep,
) -> JSONResponse:
    owned(ctl, who, sandboxId)
    return _answer(path, _TOOLBOX)

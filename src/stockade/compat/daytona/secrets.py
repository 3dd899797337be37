"""``/daytona/api/secret``: Daytona's organization secrets as the tenant's Stockade secrets
(docs/secrets.md). A secret's id is its name; its value goes in and never comes out. A sandbox
created with ``secrets`` sees a placeholder, fresh for each sandbox, that the egress proxy
replaces with the value only on the way to the secret's hosts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from ...engine import NotFound
from ...models import CreateSecret as StockadeSecret
from ...models import SecretInfo
from ._base import API, DaytonaError, DaytonaRoute
from ._lookup import AnswerDep
from .render import iso
from .wire import CreateSecret, UpdateSecret

router = APIRouter(prefix=API + "/secret", route_class=DaytonaRoute, tags=["daytona"])
SecretId = Annotated[str, Path(min_length=1, max_length=64)]
#: What ``placeholder`` says: the real one is made for each sandbox (docs/compat-daytona.md).
PLACEHOLDER = "STOCKADE_SECRET_<fresh in each sandbox>"


def _secret(info: SecretInfo) -> dict[str, Any]:
    return {
        "id": info.name,
        "name": info.name,
        "description": info.description,
        "createdAt": iso(info.created_at),
        "updatedAt": iso(info.updated_at),
        "placeholder": PLACEHOLDER,
        "hosts": list(info.hosts),
    }


def _secrets(answer: AnswerDep) -> Any:
    """The engine's secrets service (a cluster replica has none yet: 501)."""
    found = getattr(answer.ctl.engine, "secrets", None)
    if found is None:
        raise DaytonaError(501, "secrets: not available through a cluster replica yet (docs/secrets.md)")
    return found


@router.post("", status_code=201)
async def create_secret(body: CreateSecret, answer: AnswerDep) -> dict[str, Any]:
    """A new secret of the caller's tenant (409 if the name is taken), bound to ``hosts``."""
    service, who = _secrets(answer), answer.who
    if not body.hosts:
        raise DaytonaError(
            400,
            "hosts: a secret here must name the hosts it may be sent to "
            "(e.g. hosts=['api.example.com']); unrestricted secrets are "
            "not supported",
        )
    try:
        await service.get(who.tenant, body.name)
        raise DaytonaError(409, f"Secret with name {body.name} already exists")
    except NotFound:
        pass
    info = await service.create(
        who.tenant,
        StockadeSecret(name=body.name, value=body.value, hosts=body.hosts, description=body.description),
    )
    await answer.ctl.record(who, answer.request_id, "secret.set", body.name, hosts=info.hosts)
    return _secret(info)


@router.get("")
async def list_secrets(answer: AnswerDep) -> list[dict[str, Any]]:
    return [_secret(s) for s in (await _secrets(answer).list(answer.who.tenant)).items]


@router.get("/paginated")
async def list_secrets_paginated(
    answer: AnswerDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    name: Annotated[str | None, Query(max_length=64)] = None,
    sort: Annotated[str, Query(pattern="^(name|createdAt|updatedAt)$")] = "createdAt",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> dict[str, Any]:
    """A page of the caller's secrets (``name``: part of the name); the cursor is the offset."""
    items = [
        s
        for s in (await _secrets(answer).list(answer.who.tenant)).items
        if name is None or name.lower() in s.name.lower()
    ]
    field = {"name": "name", "createdAt": "created_at", "updatedAt": "updated_at"}[sort]
    items.sort(key=lambda s: (getattr(s, field), s.name), reverse=order == "desc")
    if cursor is not None and not cursor.isdigit():
        raise DaytonaError(400, "cursor: use the nextCursor of the previous page")
    start = int(cursor or 0)
    page = items[start : start + limit]
    more = start + limit < len(items)
    return {
        "items": [_secret(s) for s in page],
        "total": len(items),
        "nextCursor": str(start + limit) if more else None,
    }


@router.get("/{secretId}")
async def get_secret(secretId: SecretId, answer: AnswerDep) -> dict[str, Any]:  # noqa: N803
    return _secret(await _secrets(answer).get(answer.who.tenant, secretId))


@router.patch("/{secretId}")
async def update_secret(
    secretId: SecretId,
    body: UpdateSecret,  # noqa: N803
    answer: AnswerDep,
) -> dict[str, Any]:
    """Change the value, hosts or description; sandboxes see the change from their next
    connection on (their placeholders stay)."""
    if body.hosts is not None and not body.hosts:
        raise DaytonaError(400, "hosts: a secret here must keep at least one host")
    info = await _secrets(answer).update(
        answer.who.tenant, secretId, value=body.value, hosts=body.hosts, description=body.description
    )
    await answer.ctl.record(answer.who, answer.request_id, "secret.set", secretId, hosts=info.hosts)
    return _secret(info)


@router.delete("/{secretId}", status_code=204)
async def delete_secret(secretId: SecretId, answer: AnswerDep) -> Response:  # noqa: N803
    await _secrets(answer).delete(answer.who.tenant, secretId)
    await answer.ctl.record(answer.who, answer.request_id, "secret.delete", secretId)
    return Response(status_code=204)

"""Dashboard pages beyond sandboxes: templates (list, delete, snapshot a sandbox into one),
volumes, API keys (create, shown once; revoke), tenants and quotas, and the audit log. Keys,
tenants and audit go to the HTTP API directly (the SDK has no calls for them); the rest
through the SDK."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..sdk import ApiError, AsyncSandbox, AsyncTemplate, AsyncVolume
from . import pages
from .sessions import Session
from .web import Failure, api_url, call_api, html, note, refused, signed_in, take_note

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
KEY_ID = re.compile(r"^sk_[0-9a-f]{12}$")
#: The audit page shows the newest events; it reads at most this many to find them.
AUDIT_SCAN = 10000
AUDIT_SHOWN = 200


def checked_name(value: Any, what: str) -> str:
    text = str(value or "")
    if not NAME.match(text):
        raise Failure(
            400,
            f"{what} must be 1-64 lower-case letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit",
        )
    return text


@signed_in
async def templates(request: Request, session: Session) -> Response:
    found = await AsyncTemplate.list(api_url=api_url(request), api_key=session.key)
    return html(pages.templates(session, found, take_note(request)))


@signed_in
async def delete_template(request: Request, session: Session) -> Response:
    name = checked_name(request.path_params["name"], "a template name")
    await AsyncTemplate.delete(name, api_url=api_url(request), api_key=session.key)
    note(request, f"deleted template {name}")
    return RedirectResponse("/ui/templates", 303)


@signed_in
async def snapshot(request: Request, session: Session) -> Response:
    name = checked_name(request.state.form.get("name"), "the template name")
    sandbox_id = str(request.path_params["sandbox_id"])
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", sandbox_id):
        raise Failure(404, f"no sandbox {sandbox_id!r}")
    sb = await AsyncSandbox.get(sandbox_id, api_url=api_url(request), api_key=session.key)
    try:
        await sb.snapshot(name)
    except ApiError as exc:
        return refused(request, f"saving as template {name}", exc, f"/ui/sandboxes/{sb.id}")
    finally:
        await sb.close()
    note(request, f"saved {sandbox_id} as template {name}")
    return RedirectResponse("/ui/templates", 303)


@signed_in
async def keys(request: Request, session: Session) -> Response:
    page = await call_api(request, session, "GET", "/keys", params={"limit": 1000})
    return html(pages.keys(session, page["items"], take_note(request)))


@signed_in
async def create_key(request: Request, session: Session) -> Response:
    form = request.state.form
    body: dict[str, Any] = {}
    if form.get("name"):
        body["name"] = str(form["name"])[:128]
    if session.admin and form.get("tenant"):
        body["tenant"] = checked_name(form["tenant"], "the tenant")
    if form.get("expires_days"):
        try:
            days = float(str(form["expires_days"]))
        except ValueError:
            days = -1
        if not 0 < days <= 3650:
            raise Failure(400, "a key expires after 0 to 3650 days (leave empty for never)")
        body["expires_in"] = days * 86400
    created = await call_api(request, session, "POST", "/keys", json=body)
    return html(pages.new_key(session, created), 201)


@signed_in
async def revoke_key(request: Request, session: Session) -> Response:
    key_id = str(request.path_params["key_id"])
    if not KEY_ID.match(key_id):
        raise Failure(404, f"no key {key_id!r}")
    await call_api(request, session, "DELETE", f"/keys/{key_id}")
    note(request, f"revoked {key_id}")
    return RedirectResponse("/ui/keys", 303)


@signed_in
async def audit(request: Request, session: Session) -> Response:
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while len(events) < AUDIT_SCAN:
        page = await call_api(request, session, "GET", "/audit", params=params)
        events = (events + page["items"])[-AUDIT_SHOWN:]
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    return html(pages.audit(session, list(reversed(events))))


@signed_in
async def volumes(request: Request, session: Session) -> Response:
    found = await AsyncVolume.list(api_url=api_url(request), api_key=session.key)
    return html(pages.volumes(session, found, take_note(request)))


@signed_in
async def create_volume(request: Request, session: Session) -> Response:
    form = request.state.form
    name = checked_name(form.get("name"), "the volume name")
    try:
        size = int(str(form.get("size_mb") or "1024"))
    except ValueError:
        size = 0
    if not 16 <= size <= 1048576:
        raise Failure(400, "a volume's size is 16 to 1048576 MiB")
    await AsyncVolume.create(name, size, api_url=api_url(request), api_key=session.key)
    note(request, f"created volume {name} ({size} MiB)")
    return RedirectResponse("/ui/volumes", 303)


@signed_in
async def delete_volume(request: Request, session: Session) -> Response:
    name = checked_name(request.path_params["name"], "a volume name")
    await AsyncVolume.delete(name, api_url=api_url(request), api_key=session.key)
    note(request, f"deleted volume {name}")
    return RedirectResponse("/ui/volumes", 303)


QUOTAS = {
    "max_sandboxes": int,
    "max_vcpu": float,
    "max_memory_mb": int,
    "max_lifetime": float,
    "max_disk_mb": int,
}


@signed_in
async def tenants(request: Request, session: Session) -> Response:
    page = await call_api(request, session, "GET", "/tenants", params={"limit": 1000})
    return html(pages.tenants(session, page["items"], take_note(request)))


@signed_in
async def update_tenant(request: Request, session: Session) -> Response:
    name = checked_name(request.path_params["name"], "a tenant name")
    form = request.state.form
    changes: dict[str, Any] = {}
    for field, kind in QUOTAS.items():
        value = str(form.get(field) or "").strip()
        if value:
            try:
                changes[field] = kind(value)
            except ValueError:
                raise Failure(400, f"{field} must be a number") from None
    await call_api(request, session, "PATCH", f"/tenants/{name}", json=changes)
    note(
        request,
        f"updated {name}: " + (", ".join(f"{k}={v}" for k, v in changes.items()) or "nothing changed"),
    )
    return RedirectResponse("/ui/tenants", 303)


ROUTES = [
    Route("/ui/volumes", volumes, methods=["GET"]),
    Route("/ui/volumes", create_volume, methods=["POST"]),
    Route("/ui/volumes/{name}/delete", delete_volume, methods=["POST"]),
    Route("/ui/tenants", tenants),
    Route("/ui/tenants/{name}", update_tenant, methods=["POST"]),
    Route("/ui/templates", templates),
    Route("/ui/templates/{name}/delete", delete_template, methods=["POST"]),
    Route("/ui/sandboxes/{sandbox_id}/snapshot", snapshot, methods=["POST"]),
    Route("/ui/keys", keys, methods=["GET"]),
    Route("/ui/keys", create_key, methods=["POST"]),
    Route("/ui/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/ui/audit", audit),
]

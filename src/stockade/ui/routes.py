"""The dashboard's pages and forms, under ``/ui``. Each handler calls the server's own HTTP
API through the SDK with the session's key, so tenancy, quotas and audit are the API's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

import httpx
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..models import Isolation
from ..sdk import ApiError, AsyncSandbox
from ..sdk._transport import tls_context
from . import admin, build, detail, events, pages
from .sessions import COOKIE, LIFETIME, Session, Sessions
from .web import HEADERS, Failure, api_url, html, note, refused, signed_in, take_note

STATIC = Path(__file__).parent / "static"
SANDBOX_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EXPIRED_LINK = (
    "that sign-in link has expired or was used already: run 'stockade dashboard' on the server for a new one"
)
#: A file shown in the page is cut here; download has no such limit.
VIEW_BYTES = 256 * 1024


def _sandbox_id(request: Request) -> str:
    sandbox_id = request.path_params["sandbox_id"]
    if not SANDBOX_ID.match(sandbox_id):
        raise Failure(404, f"no sandbox {sandbox_id!r}")
    return str(sandbox_id)


def _path(request: Request, default: str = "/home/user") -> str:
    path = request.query_params.get("path") or default
    if not path.startswith("/") or "\x00" in path or len(path) > 4096:
        raise Failure(400, "path must be an absolute path inside the sandbox")
    return path


async def _sandbox(request: Request, session: Session) -> AsyncSandbox:
    return await AsyncSandbox.get(_sandbox_id(request), api_url=api_url(request), api_key=session.key)


async def login_page(request: Request) -> Response:
    token = request.query_params.get("token")
    if token is None:
        return html(pages.login())
    who = request.app.state.sessions.peek_link(token[:128])
    if who is None:
        return html(pages.login(EXPIRED_LINK), 401)
    return html(pages.confirm_link(token, who))


async def login(request: Request) -> Response:
    origin = request.headers.get("origin")
    if origin is not None and origin != _origin(request):
        return html(pages.login("sign-in from another site refused"), 403)
    form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
    if form.get("token"):
        opened = request.app.state.sessions.redeem(str(form["token"])[:128])
        if opened is None:
            return html(pages.login(EXPIRED_LINK), 401)
        return _signed_in(request, opened[0])
    key = str(form.get("key") or "").strip()
    if not key or len(key) > 512:
        return html(pages.login("enter an API key"), 400)
    try:
        async with httpx.AsyncClient(base_url=api_url(request), verify=tls_context(), timeout=15) as client:
            r = await client.get("/whoami", headers={"Authorization": f"Bearer {key}"})
    except (httpx.TransportError, Failure) as exc:
        return html(pages.login(f"cannot check the key: {exc}"), 502)
    if r.status_code == 401:
        return html(pages.login("that key is invalid, revoked or expired"), 401)
    if r.status_code != 200:
        return html(pages.login(f"the server could not check the key (HTTP {r.status_code}); try again"), 502)
    who = r.json()
    session_id, _ = request.app.state.sessions.open(key, who["tenant"], bool(who["admin"]))
    return _signed_in(request, session_id)


def _signed_in(request: Request, session_id: str) -> Response:
    response = RedirectResponse("/ui/", 303)
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(LIFETIME),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


@signed_in
async def logout(request: Request, session: Session) -> Response:
    request.app.state.sessions.close(request.state.session_id)
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


@signed_in
async def index(request: Request, session: Session) -> Response:
    q = request.query_params
    filters = {
        "state": q.get("state") or None,
        "tier": q.get("tier") or None,
        "template": q.get("template") or None,
    }
    if filters["state"] not in (None, *pages.STATES) or filters["tier"] not in (None, *pages.TIERS):
        raise Failure(400, "unknown state or tier in the filter")
    items = await AsyncSandbox.list(state=filters["state"], api_url=api_url(request), api_key=session.key)
    items = [
        s
        for s in items
        if (filters["tier"] in (None, s.isolation)) and (filters["template"] in (None, s.template))
    ]
    if q.get("rows"):  # the page updating itself
        return html(pages.sandbox_rows(items))
    return html(pages.sandbox_list(session, items, filters, take_note(request)))


@signed_in
async def create(request: Request, session: Session) -> Response:
    form = request.state.form
    template, tier = str(form.get("template") or "base"), str(form.get("tier") or "container")
    try:
        timeout = float(str(form.get("timeout") or "600"))
    except ValueError:
        timeout = 0
    if not admin.NAME.match(template) or tier not in pages.TIERS or not 1 <= timeout <= 86400:
        raise Failure(
            400,
            "give a template name, a tier (container, gvisor or microvm) and a "
            "lifetime between 1 and 86400 seconds",
        )
    sb = await AsyncSandbox.create(
        template,
        isolation=cast(Isolation, tier),
        timeout=timeout,
        metadata={"created-by": "dashboard"},
        api_url=api_url(request),
        api_key=session.key,
    )
    await sb.close()
    note(request, f"created {sb.id}")
    return RedirectResponse(f"/ui/sandboxes/{sb.id}", 303)


@signed_in
async def action(request: Request, session: Session) -> Response:
    verb = request.path_params["action"]
    if verb not in pages.ACTIONS:
        raise Failure(404, f"no action {verb!r}")
    sb = await _sandbox(request, session)
    try:
        await getattr(sb, verb)()
    except ApiError as exc:
        return refused(request, verb, exc, f"/ui/sandboxes/{sb.id}")
    finally:
        await sb.close()
    if verb == "kill":
        note(request, f"killed {sb.id}")
        return RedirectResponse("/ui/", 303)
    note(request, f"{verb}: done, now {sb.info.state}")
    return RedirectResponse(f"/ui/sandboxes/{sb.id}", 303)


@signed_in
async def file_list(request: Request, session: Session) -> Response:
    sb = await _sandbox(request, session)
    path = _path(request)
    try:
        entries = await sb.files.list(path)
    finally:
        await sb.close()
    return html(pages.files(session, sb.id, path, entries, take_note(request)))


@signed_in
async def file_view(request: Request, session: Session) -> Response:
    sb = await _sandbox(request, session)
    path = _path(request)
    data = b""
    try:
        stream = await sb.files.read(path, format="stream")
        try:
            async for chunk in stream:
                data += chunk
                if len(data) > VIEW_BYTES:
                    break
        finally:
            await stream.aclose()
    finally:
        await sb.close()
    cut = len(data) > VIEW_BYTES
    return html(pages.file_view(session, sb.id, path, data[:VIEW_BYTES].decode(errors="replace"), cut))


@signed_in
async def download(request: Request, session: Session) -> Response:
    sb = await _sandbox(request, session)
    path = _path(request)
    chunks = await sb.files.read(path, format="stream")
    try:
        first = await anext(chunks, b"")  # errors (no such file) surface before the headers
    except BaseException:
        await sb.close()
        raise

    async def body() -> Any:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await sb.close()

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={**HEADERS, "Content-Disposition": attachment(path)},
    )


def attachment(path: str) -> str:
    """A Content-Disposition for any file name: an ASCII fallback and the exact UTF-8 name."""
    name = path.rsplit("/", 1)[-1] or "download"
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


@signed_in
async def upload(request: Request, session: Session) -> Response:
    folder = _path(request)
    upload = request.state.form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise Failure(400, "choose a file to upload")
    name = upload.filename.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise Failure(400, f"cannot upload a file named {upload.filename!r}")
    sb = await _sandbox(request, session)
    try:
        entry = await sb.files.write(folder.rstrip("/") + "/" + name, await upload.read())
    finally:
        await sb.close()
    note(request, f"uploaded {entry.path} ({entry.size} bytes)")
    return RedirectResponse(f"/ui/sandboxes/{sb.id}/files?" + urlencode({"path": folder}), 303)


def create_ui(sessions: Sessions) -> Starlette:
    """The ``/ui`` application."""
    app = Starlette(
        routes=[
            Route("/ui", lambda request: RedirectResponse("/ui/", 307)),
            Route("/ui/", index),
            Route("/ui/login", login_page, methods=["GET"]),
            Route("/ui/login", login, methods=["POST"]),
            Route("/ui/logout", logout, methods=["POST"]),
            *admin.ROUTES,  # before /ui/sandboxes/{sandbox_id}/{action}
            *build.ROUTES,
            *events.ROUTES,
            Route("/ui/sandboxes", create, methods=["POST"]),
            *detail.ROUTES,  # before /ui/sandboxes/{sandbox_id}/{action}
            Route("/ui/sandboxes/{sandbox_id}/files", file_list),
            Route("/ui/sandboxes/{sandbox_id}/files/view", file_view),
            Route("/ui/sandboxes/{sandbox_id}/files/download", download),
            Route("/ui/sandboxes/{sandbox_id}/files/upload", upload, methods=["POST"]),
            Route("/ui/sandboxes/{sandbox_id}/{action}", action, methods=["POST"]),
            Mount("/ui/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    app.state.sessions = sessions
    return app

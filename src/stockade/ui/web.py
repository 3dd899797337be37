"""What every dashboard handler shares: the signed-in wrapper (session, CSRF, errors as
pages), security headers, notes, and the loopback address of the API."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..loopback import loopback_url
from ..sdk import ApiError, StockadeError
from ..sdk._transport import tls_context
from ..sdk.exceptions import from_response
from . import pages
from .sessions import Note, Session, Sessions, cookie_value, csrf_ok

#: Security headers on every page: nothing may come from anywhere but this server.
#: (xterm.js themes the terminal with a <style> element it writes, hence inline styles.)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
Handler = Callable[[Request, Session], Awaitable[Response]]


class Failure(Exception):
    """A request the dashboard refuses, with the status and the words to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status, headers=HEADERS)


def api_url(request: Request) -> str:
    url = loopback_url(request.scope)
    if url is None:
        raise Failure(501, "the dashboard needs 'stockade serve' on TCP (not the local socket)")
    return url


def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Run ``handler`` for a signed-in browser (forms also need the CSRF token); send others
    to the sign-in page; show SDK and form errors as a page with their status."""

    async def endpoint(request: Request) -> Response:
        sessions: Sessions = request.app.state.sessions
        session_id = cookie_value(request.scope["headers"]) or ""
        session = sessions.get(session_id)
        if session is None:
            return RedirectResponse("/ui/login", 303)
        request.state.session_id = session_id
        try:
            if request.method == "POST":
                form = await request.form(max_files=1, max_fields=8, max_part_size=1 << 20)
                if not csrf_ok(session, str(form.get("csrf") or "")):
                    raise Failure(
                        403, "the form is stale or came from another site; reload the page and try again"
                    )
                request.state.form = form
            return await handler(request, session)
        except Failure as failure:
            return html(pages.error(session, failure.status, failure.message), failure.status)
        except ApiError as exc:
            if exc.status == 401:  # the key was revoked or has expired: sign out
                sessions.close(session_id)
                return html(pages.login(str(exc)), 401)
            status = exc.status if 400 <= exc.status < 600 else 502
            return html(pages.error(session, status, str(exc)), status)
        except StockadeError as exc:
            return html(pages.error(session, 502, str(exc)), 502)

    return endpoint


def note(request: Request, text: str, failed: bool = False) -> None:
    request.app.state.sessions.note(request.state.session_id, text, failed)


def take_note(request: Request) -> Note:
    note: Note = request.app.state.sessions.take_note(request.state.session_id)
    return note


def refused(request: Request, doing: str, exc: ApiError, back: str) -> Response:
    """Back to ``back`` saying why the API refused ``doing`` (a 409 names the state or the
    tier's missing capability; a 429 the quota). A gone sandbox (404) or key (401) is raised
    for :func:`signed_in` to show."""
    if exc.status in (401, 404):
        raise exc
    note(request, f"{doing} refused: {exc}", failed=True)
    return RedirectResponse(back, 303)


async def call_api(request: Request, session: Session, method: str, path: str, **kwargs: Any) -> Any:
    """One request to the HTTP API as the session's key (for what the SDK does not cover:
    keys and the audit log); errors raised as the SDK raises them."""
    async with httpx.AsyncClient(
        base_url=api_url(request),
        verify=tls_context(),
        timeout=30,
        headers={"Authorization": f"Bearer {session.key}"},
    ) as client:
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Failure(502, f"the API did not answer: {exc}") from None
    body = response.json() if response.content else None
    if response.status_code >= 400:
        raise from_response(response.status_code, body)
    return body

"""``Dashboard``: serves ``/ui`` itself (the sign-in page must be reachable without a key), and
lets a signed-in browser open the PTY WebSocket, which cannot carry an Authorization header.

That WebSocket is let through only with the session cookie, the session's CSRF token in the
query (``csrf``) and an ``Origin`` equal to the server's own; the middleware then adds the
session's key as ``Authorization`` and the API's auth and tenancy checks run as for any
client. Nothing else accepts the cookie: every other API request still needs a key.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from .routes import create_ui
from .sessions import Session, Sessions, cookie_value, csrf_ok

PTY_PATH = re.compile(r"^/sandboxes/[A-Za-z0-9_-]{1,64}/pty$")


class Dashboard:
    """ASGI middleware in front of the API's auth: ``/ui`` pages and the browser's terminal."""

    def __init__(self, app: ASGIApp, sessions: Sessions | None = None) -> None:
        self.app = app
        self.sessions = sessions if sessions is not None else Sessions()
        self.ui = create_ui(self.sessions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/ui" or path.startswith("/ui/")):
            return await self.ui(scope, receive, send)
        if scope["type"] == "websocket" and PTY_PATH.match(path):
            scope = self._with_session_key(scope)
        await self.app(scope, receive, send)

    def _with_session_key(self, scope: Scope) -> Scope:
        """The scope with the session's key added, when the browser proved it is ours."""
        headers = list(scope["headers"])
        if any(name == b"authorization" for name, _ in headers):
            return scope
        session = browser_session(scope, self.sessions)
        if session is None:
            return scope  # no key added: the API refuses it as it refuses any keyless client
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        rest = urlencode([(k, v) for k, v in query if k != "csrf"]).encode()
        headers.append((b"authorization", f"Bearer {session.key}".encode()))
        return {**scope, "headers": headers, "query_string": rest}


def browser_session(scope: Scope, sessions: Sessions) -> Session | None:
    """The session of a terminal WebSocket that proved it comes from our page: the session
    cookie, that session's CSRF token in the query, and the server's own ``Origin``."""
    if scope["type"] != "websocket" or not PTY_PATH.match(scope.get("path", "")):
        return None
    headers = list(scope["headers"])
    session = sessions.get(cookie_value(headers))
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    token = next((v for k, v in query if k == "csrf"), None)
    if session is None or not csrf_ok(session, token) or not _same_origin(headers):
        return None
    return session


def _same_origin(headers: list[tuple[bytes, bytes]]) -> bool:
    found = dict(headers)
    origin = found.get(b"origin", b"").decode("latin-1")
    host = found.get(b"host", b"").decode("latin-1")
    return bool(host) and origin in (f"http://{host}", f"https://{host}")

"""The local daemon's loopback TCP port, which serves the dashboard.

Local mode has no API keys: its unix socket sits in a root-only directory, and that is the
whole authentication. A TCP port on 127.0.0.1 is open to every user of the machine, so on it
nothing gets through but:

- the dashboard's own pages (``/ui``), which want a session (made from a one-time sign-in link
  that only the socket's users can mint, ``POST /dashboard/links``);
- the terminal WebSocket of a signed-in page (session cookie, CSRF token, own ``Origin``);
- API requests carrying the daemon's key, a random value that never leaves its memory: the
  dashboard's own calls back into the API.
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket

from starlette.types import ASGIApp, Receive, Scope, Send

from ..loopback import loopback_url
from ..ui.middleware import browser_session
from ..ui.sessions import Sessions
from .auth import bearer, same_secret
from .errors import json_error

log = logging.getLogger("stockade.server")
#: The dashboard's port when nothing else holds it (else any free one): $STOCKADE_DASHBOARD_PORT.
DEFAULT_PORT = 8801


def new_daemon_key() -> str:
    return "sk_local_" + secrets.token_urlsafe(32)


class LocalPortGate:
    """ASGI middleware: on TCP, let through only the dashboard and holders of the daemon's key.
    Requests on the unix socket pass untouched."""

    def __init__(self, app: ASGIApp, key: str, sessions: Sessions) -> None:
        self.app = app
        self.key = key
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] in ("http", "websocket")
            and loopback_url(scope) is not None
            and not self._allowed(scope)
        ):
            return await json_error(
                scope,
                send,
                401,
                "unauthorized",
                "this port serves only the dashboard: run 'stockade "
                "dashboard' on this machine for a sign-in link",
            )
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/ui" or path.startswith("/ui/")):
            return True
        token = bearer(scope["headers"])
        if token is not None:
            return same_secret(token, self.key)
        session = browser_session(scope, self.sessions)
        return session is not None and same_secret(session.key, self.key)


def bind_port(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port``, or on any free port if that one is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            sock.close()
            raise
        log.warning("port %d is in use; the dashboard takes a free port instead", port)
        sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock

"""How a front end mounted in ``stockade serve`` (``/mcp``, ``/ui``) calls that same server
back through its public HTTP API, so keys, tenants, quotas and audit apply unchanged."""

from __future__ import annotations

from typing import Any, Mapping


def loopback_url(scope: Mapping[str, Any]) -> str | None:
    """The base URL of the socket this request arrived on (from the ASGI ``server`` entry,
    never from the client's Host header); None on a unix socket.

    Always ``http``: ``stockade serve`` speaks plain HTTP (TLS is a reverse proxy's job), and
    the request's own scheme may be the proxy's (``X-Forwarded-Proto``), not the socket's."""
    server = scope.get("server")
    if not server or server[1] is None:
        return None
    host = f"[{server[0]}]" if ":" in str(server[0]) else server[0]
    return f"http://{host}:{server[1]}"

"""``/mcp`` on ``stockade serve``: the MCP server as streamable HTTP (stateless, JSON).

The server's auth middleware has already checked the caller's API key before a request gets
here; each tool then calls the same server back over loopback with that key, so the key's
tenant, quotas and audit apply exactly as to the REST API. The key, not a cookie, is what
authorises, so the SDK's DNS-rebinding check (Host and Origin) is off.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..loopback import loopback_url
from .tools import Target, build_server

PATH = "/mcp"


def _target(ctx: Context) -> Target:
    """Loopback to the socket the request arrived on (never the Host header), same key."""
    scope = getattr(ctx.request_context.request, "scope", None) or {}
    url = loopback_url(scope)
    if url is None:
        raise ToolError("/mcp over a unix socket cannot call back into the server; "
                        "use 'stockade mcp' (stdio) on this machine instead")
    auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, key = auth.partition(" ")
    return Target(api_url=url,
                  api_key=key.strip() if scheme.lower() == "bearer" and key.strip() else None)


class McpEndpoint:
    """The ASGI endpoint; :meth:`running` must wrap the app's lifetime."""

    def __init__(self) -> None:
        server = build_server(_target)
        # The low-level server is what the SDK's own streamable_http_app() hands the manager.
        self.manager = StreamableHTTPSessionManager(
            app=server._lowlevel_server, json_response=True, stateless=True,
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager.handle_request(scope, receive, send)

    def route(self) -> Route:
        return Route(PATH, endpoint=self, methods=["GET", "POST", "DELETE"])

"""``/mcp`` on ``stockade serve``: the MCP server as streamable HTTP (stateless, JSON).

The server's auth middleware has already checked the caller's API key before a request gets
here; each tool then calls the same server back over loopback with that key, so the key's
tenant, quotas and audit apply exactly as to the REST API. The key, not a cookie, is what
authorises, so the SDK's DNS-rebinding check (Host and Origin) is off.

The ``mcp`` package is imported and the session manager started on the first request, so
a server that never serves MCP does not pay for it at start.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

import anyio
import anyio.abc
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..loopback import loopback_url

PATH = "/mcp"


def _target(ctx: Any) -> Any:
    """Loopback to the socket the request arrived on (never the Host header), same key."""
    from mcp.server.mcpserver.exceptions import ToolError

    from .tools import Target

    scope = getattr(ctx.request_context.request, "scope", None) or {}
    url = loopback_url(scope)
    if url is None:
        raise ToolError(
            "/mcp over a unix socket cannot call back into the server; "
            "use 'stockade mcp' (stdio) on this machine instead"
        )
    auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, key = auth.partition(" ")
    return Target(api_url=url, api_key=key.strip() if scheme.lower() == "bearer" and key.strip() else None)


class McpEndpoint:
    """The ASGI endpoint; :meth:`running` must wrap the app's lifetime."""

    def __init__(self) -> None:
        self._tasks: anyio.abc.TaskGroup | None = None
        self._manager: Any = None
        self._lock = anyio.Lock()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield
            finally:
                self._tasks = None
                tasks.cancel_scope.cancel()  # stops the session manager, if it was started

    async def _started(self) -> Any:
        async with self._lock:
            if self._manager is None:
                if self._tasks is None:
                    raise RuntimeError("McpEndpoint.running() is not active")
                self._manager = await self._tasks.start(_serve)
        return self._manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = await self._started()
        await manager.handle_request(scope, receive, send)

    def route(self) -> Route:
        return Route(PATH, endpoint=self, methods=["GET", "POST", "DELETE"])


async def _serve(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Build the MCP server, run its session manager, and hand the manager back."""
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings

    from .tools import build_server

    server = build_server(_target)
    # The low-level server is what the SDK's own streamable_http_app() hands the manager.
    manager = StreamableHTTPSessionManager(
        app=server._lowlevel_server,
        json_response=True,
        stateless=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    async with manager.run():
        task_status.started(manager)
        await anyio.sleep_forever()

"""The port proxy: HTTP and WebSocket to a port inside a sandbox, tunnelled through its agent.

Two ways in, both handled here before routing (``PortProxy`` is ASGI middleware):

- by path: ``/sandboxes/{id}/ports/{port}/rest?query`` reaches ``/rest?query`` on the sandbox's
  ``127.0.0.1:{port}``;
- by host name: any path on ``{port}-{id}.{domain}`` when the server has a ``proxy_domain``.

A request must carry the owning tenant's API key (``Authorization: Bearer``) or an access token
for that sandbox (``Authorization: Bearer``, ``?stockade_token=``, or the ``stockade_token``
cookie that a ``?stockade_token=`` visit sets). The credential that let a request in is never
forwarded to the sandbox. Each request gets its own tunnel (``Connection: close`` upstream);
bodies stream both ways within the agent channel's credit, so nothing is buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Callable
from urllib.parse import parse_qsl, quote, urlencode

import h11
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine import EngineError
from ..engine.ports import Tunnel
from .access import AccessTokens
from .auth import Principal, bearer, not_found_message
from .errors import json_error
from .wsrelay import relay_websocket

if TYPE_CHECKING:
    from .control import Control

TOKEN = "stockade_token"
PORT_PATH = re.compile(r"^/sandboxes/([^/]+)/ports/([0-9]{1,5})(/.*)?$", re.S)
PORT_HOST = re.compile(r"^([0-9]{1,5})-([a-z0-9]{1,64})$")
#: Request headers that describe one hop, not the request (RFC 9110 section 7.6.1), and those
#: the proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)


@dataclass(frozen=True)
class Target:
    """Where a proxied request goes, and what it looked like on the way in."""

    sandbox_id: str
    port: int
    path: str  # upstream request target: path and query
    cookie_path: str  # where a token cookie applies
    prefix: str  # the path prefix the proxy removed ("" by host name)


@dataclass(frozen=True)
class Grant:
    """Why a request may pass: who, and which credential to hide from the sandbox."""

    principal: Principal | None
    strip_authorization: bool
    new_cookie: str | None  # a token that came in the query, to set as a cookie
    expires_at: float | None


class PortProxy:
    """ASGI middleware: send port requests to the sandbox, everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        control: Callable[[], "Control | None"],
        tokens: AccessTokens,
        domain: str | None = None,
    ) -> None:
        self.app = app
        self.control = control
        self.tokens = tokens
        self.domain = domain.lower().strip(".") if domain else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        target = self._match(scope)
        if target is None:
            return await self.app(scope, receive, send)
        if isinstance(target, str):
            return await json_error(scope, send, 404, "not_found", target)
        control = self.control()
        if control is None:
            return await json_error(scope, send, 503, "unavailable", "the server is starting")
        grant = await self._authorize(scope, target.sandbox_id, control)
        if not isinstance(grant, Grant):
            return await json_error(scope, send, *grant)
        if grant.principal is not None:
            scope.setdefault("state", {})["principal"] = grant.principal
        if target.prefix and target.path.partition("?")[0] == "" and scope["type"] == "http":
            return await _redirect(send, target.prefix + "/" + _query(scope))
        try:
            tunnel = await control.engine.open_port(target.sandbox_id, target.port)
        except EngineError as exc:
            return await json_error(scope, send, exc.status, exc.code, exc.message)
        headers = _forward_headers(scope, target, grant)
        if scope["type"] == "websocket":
            await relay_websocket(scope, receive, send, tunnel, target.path or "/", headers)
        else:
            await HttpRelay(scope, receive, send, tunnel).run(
                target.path or "/", headers, _set_cookie(target, grant)
            )

    # -- which sandbox and port ------------------------------------------------------------
    def _match(self, scope: Scope) -> Target | str | None:
        """The target, an error message (a proxy host that names no port), or None."""
        query = _query(scope, drop=TOKEN)
        if self.domain is not None:
            host = _header(scope, b"host").rpartition(":")[0] or _header(scope, b"host")
            host = host.lower().rstrip(".")
            if host.endswith("." + self.domain):
                label = host[: -len(self.domain) - 1]
                match = PORT_HOST.match(label)
                if match is None or not 1 <= int(match.group(1)) <= 65535:
                    return f"{host!r} names no sandbox port: use {{port}}-{{sandbox id}}.{self.domain}"
                return Target(match.group(2), int(match.group(1)), _raw_path(scope) + query, "/", "")
        match = PORT_PATH.match(scope["path"])
        if match is None:
            return None
        sandbox_id, port = match.group(1), int(match.group(2))
        if not 1 <= port <= 65535:
            return f"port {port} is out of range (1-65535)"
        prefix = f"/sandboxes/{sandbox_id}/ports/{port}"
        raw = _raw_path(scope)
        rest = raw[len(prefix) :] if raw.startswith(prefix) else quote(match.group(3) or "")
        return Target(sandbox_id, port, rest + query if rest else "", f"/sandboxes/{sandbox_id}/", prefix)

    # -- who may pass ------------------------------------------------------------------------
    async def _authorize(
        self, scope: Scope, sandbox_id: str, control: "Control"
    ) -> Grant | tuple[int, str, str]:
        if not control.needs_keys:
            return Grant(await control.authenticate(None), False, None, None)
        owner = control.owner(sandbox_id)
        key = bearer(scope["headers"])
        if key is not None:
            if (expires := self.tokens.check(sandbox_id, key)) is not None:
                return self._token_grant(owner, sandbox_id, None, expires)
            principal = await control.authenticate(key)
            if principal is not None:
                if not principal.may_see(owner):
                    return 404, "sandbox_not_found", not_found_message(sandbox_id)
                return Grant(principal, True, None, None)
        query_token = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get(TOKEN)
        for token, from_query in ((query_token, True), (_cookie(scope, TOKEN), False)):
            if token and (expires := self.tokens.check(sandbox_id, token)) is not None:
                grant = self._token_grant(owner, sandbox_id, token if from_query else None, expires)
                if isinstance(grant, Grant):
                    # The Authorization header was no Stockade credential: it is the app's own.
                    return Grant(None, False, grant.new_cookie, expires)
                return grant
        if key is not None or query_token or _cookie(scope, TOKEN):
            return 401, "unauthorized", "invalid, revoked or expired API key or access token"
        return (
            401,
            "unauthorized",
            (
                "missing credentials: send 'Authorization: Bearer <key>' or "
                "an access token from POST /sandboxes/{id}/access-token"
            ),
        )

    @staticmethod
    def _token_grant(
        owner: str | None, sandbox_id: str, new_cookie: str | None, expires: float
    ) -> Grant | tuple[int, str, str]:
        if owner is None:  # the sandbox has ended
            return 404, "sandbox_not_found", not_found_message(sandbox_id)
        return Grant(None, True, new_cookie, expires)


class HttpRelay:
    """One HTTP request and its response, over one tunnel, with h11 as the client."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, tunnel: Tunnel) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.tunnel = tunnel
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 << 10)
        self.disconnected = False
        self.started = False
        self.finished = False

    async def run(self, path: str, headers: list[tuple[bytes, bytes]], cookie: bytes | None) -> None:
        task = asyncio.current_task()
        assert task is not None
        body = _has_body(self.scope)
        if body == "chunked":
            headers.append((b"transfer-encoding", b"chunked"))
        request = h11.Request(method=self.scope["method"], target=path.encode(), headers=headers)
        uploader = asyncio.create_task(self._upload(request, body is not None, task))
        try:
            await self._download(cookie)
        except asyncio.CancelledError:
            if not self.disconnected:
                raise
            task.uncancel()
        except (h11.ProtocolError, EngineError) as exc:
            if not self.started:
                await json_error(
                    self.scope,
                    self.send,
                    502,
                    "bad_gateway",
                    f"the server on port {self.tunnel.port} in sandbox "
                    f"{self.tunnel.sandbox_id} answered badly: {exc}",
                )
        finally:
            self.finished = True
            uploader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await uploader
            await self.tunnel.aclose()

    async def _upload(self, request: h11.Request, has_body: bool, main: asyncio.Task[None]) -> None:
        """Send the request and its body; then wait for the client to go, and stop ``main``."""
        await self.tunnel.write(self.conn.send(request) or b"")
        more = True
        while more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            more = message.get("more_body", False)
            if has_body and message.get("body"):
                await self.tunnel.write(self.conn.send(h11.Data(data=message["body"])) or b"")
        else:
            await self.tunnel.write(self.conn.send(h11.EndOfMessage()) or b"")
            while (await self.receive())["type"] != "http.disconnect":
                pass
        if not self.finished:
            self.disconnected = True
            main.cancel()

    async def _next(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.tunnel.read())

    async def _download(self, cookie: bytes | None) -> None:
        event = await self._next()
        while isinstance(event, h11.InformationalResponse):
            event = await self._next()
        if not isinstance(event, h11.Response):
            raise h11.RemoteProtocolError(f"expected a response, got {type(event).__name__}")
        headers = [(k, v) for k, v in event.headers if k not in HOP_BY_HOP]
        if cookie is not None:
            headers.append((b"set-cookie", cookie))
        await self.send({"type": "http.response.start", "status": event.status_code, "headers": headers})
        self.started = True
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                await self.send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        self.finished = True
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


# -- helpers --------------------------------------------------------------------------------
def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        jar.load(raw)
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else quote(scope["path"])


def _query(scope: Scope, drop: str | None = None) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    if drop and query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k == drop for k, _ in pairs):
            query = urlencode([(k, v) for k, v in pairs if k != drop])
    return f"?{query}" if query else ""


def _has_body(scope: Scope) -> str | None:
    """``"length"``, ``"chunked"`` or None (no body), from the incoming headers."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            return "length"
        if key == b"transfer-encoding" and b"chunked" in value.lower():
            return "chunked"
    return None


def _forward_headers(scope: Scope, target: Target, grant: Grant) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones and Stockade's credentials, plus the
    usual ``X-Forwarded-*``."""
    websocket = scope["type"] == "websocket"
    out: list[tuple[bytes, bytes]] = []
    for key, value in scope["headers"]:
        if key in HOP_BY_HOP or (websocket and key.startswith(b"sec-websocket-")):
            continue
        if key == b"authorization" and grant.strip_authorization:
            continue
        if key == b"cookie":
            value = _without_cookie(value, TOKEN)
            if not value:
                continue
        out.append((key, value))
    client = scope.get("client")
    if client:
        out.append((b"x-forwarded-for", str(client[0]).encode()))
    out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    if host := _header(scope, b"host"):
        out.append((b"x-forwarded-host", host.encode("latin-1")))
    if target.prefix:
        out.append((b"x-forwarded-prefix", target.prefix.encode()))
    if not websocket:
        out.append((b"connection", b"close"))
    return out


def _without_cookie(value: bytes, name: str) -> bytes:
    parts = [p.strip() for p in value.split(b";")]
    return b"; ".join(p for p in parts if p and p.split(b"=", 1)[0].strip() != name.encode())


def _set_cookie(target: Target, grant: Grant) -> bytes | None:
    if grant.new_cookie is None or grant.expires_at is None:
        return None
    max_age = max(0, int(grant.expires_at - time.time()))
    return (
        f"{TOKEN}={grant.new_cookie}; Path={target.cookie_path}; Max-Age={max_age}; HttpOnly; SameSite=Lax"
    ).encode()


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 307,
            "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})

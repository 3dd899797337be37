"""The port proxy: HTTP and WebSocket servers inside sandboxes that have no network, reached
through a real remote server by path and by host name, with keys and access tokens."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from typing import Any, Callable, Iterator

import httpx
import pytest
from server_harness import Server, finish, needs_root, new_data_dir
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from stockade import Sandbox
from stockade.sdk import AsyncSandbox
from stockade.sdk._transport import Api, ConnectionConfig
from stockade.sdk.exceptions import SandboxNotFound

pytestmark = pytest.mark.root
DOMAIN = "sandboxes.test"
HTTP_PORT, ECHO_PORT, WS_PORT = 8000, 8001, 8765
BIG = 256 << 20

# An HTTP server that echoes what it was sent (stdlib only: the base image has python3 only).
ECHO_HTTP = r"""
import hashlib, http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                left -= len(chunk)
                yield chunk
    def reply(self):
        digest, length = hashlib.sha256(), 0
        for chunk in self.body():
            digest.update(chunk)
            length += len(chunk)
        out = json.dumps({"method": self.command, "path": self.path, "length": length,
                          "sha256": digest.hexdigest(),
                          "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = reply
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

# A WebSocket echo server: RFC 6455 handshake with hashlib/base64, unfragmented frames. Its
# first message reports the Authorization and Cookie headers it received.
WS_ECHO = r"""
import base64, hashlib, json, socket, struct, sys, threading
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b
def send(c, op, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 127, n)
    c.sendall(head + payload)
def serve(c):
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(4096)
    lines = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    send(c, 1, json.dumps({"path": lines[0].split()[1], "authorization": headers.get("authorization"),
                           "cookie": headers.get("cookie")}).encode())
    while True:
        b1, b2 = exact(c, 2)
        op, n = b1 & 15, b2 & 127
        if n == 126:
            n = struct.unpack("!H", exact(c, 2))[0]
        elif n == 127:
            n = struct.unpack("!Q", exact(c, 8))[0]
        mask = exact(c, 4) if b2 & 128 else bytes(4)
        raw = exact(c, n)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(raw))
        if op == 8:
            send(c, 8, payload[:2])
            return
        send(c, 10 if op == 9 else op, payload)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
while True:
    conn, _ = s.accept()
    threading.Thread(target=lambda c=conn: (serve(c), c.close()), daemon=True).start()
"""


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    needs_root()
    server = Server(new_data_dir(), STOCKADE_PROXY_DOMAIN=DOMAIN).start()
    yield server
    finish(server)


@pytest.fixture(scope="module")
def keys(srv: Server) -> dict[str, str]:
    return {"owner": srv.new_key("port-owner"), "other": srv.new_key("port-other")}


def start_servers(sb: Sandbox) -> list[Any]:
    """The three servers, in the background, as the sandbox's user; their handles."""
    sb.files.write("/home/user/echo_http.py", ECHO_HTTP)
    sb.files.write("/home/user/ws_echo.py", WS_ECHO)
    sb.files.write("/home/user/www/hello.txt", "hello from a sandbox with no network\n")
    sb.commands.run(f"truncate -s {BIG} /home/user/www/big.bin")
    handles = [
        sb.commands.run(cmd, background=True, timeout=None)
        for cmd in (
            f"python3 -m http.server {HTTP_PORT} --bind 127.0.0.1 --directory /home/user/www",
            f"python3 /home/user/echo_http.py {ECHO_PORT}",
            f"python3 /home/user/ws_echo.py {WS_PORT}",
        )
    ]
    listening = "import socket,sys\nfor p in sys.argv[1:]: socket.create_connection(('127.0.0.1', int(p)))"
    deadline = time.monotonic() + 30
    while (
        sb.commands.run(["python3", "-c", listening, str(HTTP_PORT), str(ECHO_PORT), str(WS_PORT)]).exit_code
        != 0
    ):
        assert time.monotonic() < deadline, "the servers in the sandbox did not start"
        time.sleep(0.2)
    return handles


@pytest.fixture(scope="module")
def make(srv: Server, keys: dict[str, str]) -> Iterator[Callable[..., Sandbox]]:
    made: list[Sandbox] = []
    handles: list[Any] = []

    def create(isolation: str = "container") -> Sandbox:
        sb = Sandbox.create(
            isolation=isolation, timeout=600, network="none", api_url=srv.url, api_key=keys["owner"]
        )  # type: ignore[arg-type]
        made.append(sb)
        handles.extend(start_servers(sb))
        return sb

    yield create
    for handle in handles:
        handle.disconnect()
    for sb in made:
        sb.kill()


@pytest.fixture(scope="module")
def sb(make: Callable[..., Sandbox]) -> Sandbox:
    return make()


def path_url(srv: Server, sandbox_id: str, port: int, rest: str = "/") -> str:
    return f"{srv.url}/sandboxes/{sandbox_id}/ports/{port}{rest}"


def token_for(srv: Server, key: str, sandbox_id: str, **body: Any) -> str:
    with srv.client(key) as c:
        r = c.post(f"/sandboxes/{sandbox_id}/access-token", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["url_path"].startswith(f"/sandboxes/{sandbox_id}/ports/")
        return str(r.json()["token"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- HTTP -------------------------------------------------------------------------------------
def test_http_by_path(srv: Server, keys: dict[str, str], sb: Sandbox) -> None:
    r = httpx.get(path_url(srv, sb.id, HTTP_PORT, "/hello.txt"), headers=bearer(keys["owner"]))
    assert r.status_code == 200, r.text
    assert r.text == "hello from a sandbox with no network\n"
    missing = httpx.get(path_url(srv, sb.id, HTTP_PORT, "/nope.txt"), headers=bearer(keys["owner"]))
    assert missing.status_code == 404  # the sandbox's server's own answer, passed through
    bare = httpx.get(path_url(srv, sb.id, HTTP_PORT, ""), headers=bearer(keys["owner"]))
    assert bare.status_code == 307
    assert bare.headers["location"] == f"/sandboxes/{sb.id}/ports/{HTTP_PORT}/"


def test_http_by_host_name(srv: Server, keys: dict[str, str], sb: Sandbox) -> None:
    host = f"{HTTP_PORT}-{sb.id}.{DOMAIN}"
    r = httpx.get(f"{srv.url}/hello.txt", headers={"Host": host, **bearer(keys["owner"])})
    assert r.status_code == 200, r.text
    assert r.text.startswith("hello from a sandbox")
    # Any path goes to the sandbox, even one the API also has.
    echo = httpx.get(
        f"{srv.url}/health?x=1", headers={"Host": f"{ECHO_PORT}-{sb.id}.{DOMAIN}", **bearer(keys["owner"])}
    )
    assert echo.json()["path"] == "/health?x=1"
    assert echo.json()["headers"]["host"] == f"{ECHO_PORT}-{sb.id}.{DOMAIN}"
    bad = httpx.get(f"{srv.url}/", headers={"Host": f"nonsense.{DOMAIN}", **bearer(keys["owner"])})
    assert bad.status_code == 404


def test_request_headers_path_and_credentials(srv: Server, keys: dict[str, str], sb: Sandbox) -> None:
    """The path and query arrive as sent; the key or token that let us in never does."""
    r = httpx.get(
        path_url(srv, sb.id, ECHO_PORT, "/a%20b/c?q=1&q=2"), headers={**bearer(keys["owner"]), "X-App": "yes"}
    )
    seen = r.json()
    assert seen["path"] == "/a%20b/c?q=1&q=2"
    assert seen["headers"]["x-app"] == "yes"
    assert "authorization" not in seen["headers"]
    assert keys["owner"] not in r.text
    token = token_for(srv, keys["owner"], sb.id)
    r = httpx.get(
        path_url(srv, sb.id, ECHO_PORT, f"/p?stockade_token={token}&keep=1"),
        headers={"Authorization": "Bearer the-app-s-own", "Cookie": "app=1"},
    )
    seen = r.json()
    assert seen["path"] == "/p?keep=1"
    assert seen["headers"]["authorization"] == "Bearer the-app-s-own"  # the app's, not ours
    assert token not in r.text
    assert f"stockade_token={token}" in r.headers["set-cookie"]
    # The cookie alone now opens it, and is not forwarded either.
    r = httpx.get(path_url(srv, sb.id, ECHO_PORT, "/q"), headers={"Cookie": f"app=1; stockade_token={token}"})
    assert r.status_code == 200
    assert r.json()["headers"]["cookie"] == "app=1"


def test_streamed_upload_past_the_json_body_limit(srv: Server, keys: dict[str, str], sb: Sandbox) -> None:
    chunk = hashlib.sha256(b"x").digest() * 2048  # 64 KiB
    count = 320  # 20 MiB, more than the API's 8 MiB body limit
    digest = hashlib.sha256(chunk * count).hexdigest()

    def body() -> Iterator[bytes]:
        for _ in range(count):
            yield chunk

    r = httpx.post(
        path_url(srv, sb.id, ECHO_PORT, "/upload"), content=body(), headers=bearer(keys["owner"]), timeout=120
    )
    assert r.status_code == 200, r.text
    assert (r.json()["length"], r.json()["sha256"]) == (len(chunk) * count, digest)
    r = httpx.put(
        path_url(srv, sb.id, ECHO_PORT, "/upload"),
        content=chunk * 16,
        headers=bearer(keys["owner"]),
        timeout=120,
    )
    assert r.json()["length"] == len(chunk) * 16


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_large_response_is_streamed_not_buffered(srv: Server, keys: dict[str, str], sb: Sandbox) -> None:
    url = path_url(srv, sb.id, HTTP_PORT, "/big.bin")
    with httpx.stream("GET", url, headers=bearer(keys["owner"]), timeout=120) as r:
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == BIG
        chunks = r.iter_raw(1 << 20)
        got = len(next(chunks))
        before = rss(srv.pid)
        time.sleep(3)  # a client that stops reading: the server must not keep pulling
        assert rss(srv.pid) - before < 48 << 20
        started = time.monotonic()
        for chunk in chunks:
            got += len(chunk)
        seconds = time.monotonic() - started
    assert got == BIG
    print(f"proxied {BIG >> 20} MiB at {BIG / seconds / 1e6:.0f} MB/s")


def test_port_with_nothing_listening_is_502(srv: Server, keys: dict[str, str], sb: Sandbox) -> None:
    r = httpx.get(path_url(srv, sb.id, 9999), headers=bearer(keys["owner"]))
    assert r.status_code == 502
    assert r.json()["code"] == "port_closed"
    r = httpx.get(path_url(srv, sb.id, 70000), headers=bearer(keys["owner"]))
    assert r.status_code == 404


# -- access -----------------------------------------------------------------------------------
def test_access_is_refused_without_the_owner_credentials(
    srv: Server, keys: dict[str, str], sb: Sandbox, make: Callable[..., Sandbox]
) -> None:
    url = path_url(srv, sb.id, HTTP_PORT, "/hello.txt")
    host = {"Host": f"{HTTP_PORT}-{sb.id}.{DOMAIN}"}
    assert httpx.get(url).status_code == 401
    assert httpx.get(f"{srv.url}/hello.txt", headers=host).status_code == 401
    assert httpx.get(url, headers=bearer("sk_nope_nope")).status_code == 401
    assert httpx.get(url + "?stockade_token=ff.garbage").status_code == 401
    other = httpx.get(url, headers=bearer(keys["other"]))
    assert other.status_code == 404
    assert other.json()["code"] == "sandbox_not_found"
    assert httpx.get(f"{srv.url}/hello.txt", headers={**host, **bearer(keys["other"])}).status_code == 404
    with srv.client(keys["other"]) as c:
        assert c.post(f"/sandboxes/{sb.id}/access-token").status_code == 404
    # The admin key sees every tenant's sandboxes.
    assert httpx.get(url, headers=bearer(srv.admin_key or "")).status_code == 200

    second = make()
    token = token_for(srv, keys["owner"], sb.id)
    assert httpx.get(url, params={"stockade_token": token}).status_code == 200
    assert httpx.get(url, headers=bearer(token)).status_code == 200
    assert (
        httpx.get(f"{srv.url}/hello.txt", headers=host, params={"stockade_token": token}).status_code == 200
    )
    # ...and only for its own sandbox, however it is presented.
    elsewhere = path_url(srv, second.id, HTTP_PORT, "/hello.txt")
    assert httpx.get(elsewhere, params={"stockade_token": token}).status_code == 401
    assert httpx.get(elsewhere, headers=bearer(token)).status_code == 401
    assert httpx.get(elsewhere, headers={"Cookie": f"stockade_token={token}"}).status_code == 401
    assert httpx.get(elsewhere, headers=bearer(token_for(srv, keys["owner"], second.id))).status_code == 200
    # A token is no API key.
    with srv.client(token) as c:
        assert c.get(f"/sandboxes/{sb.id}").status_code == 401

    short = token_for(srv, keys["owner"], sb.id, expires_in=1)
    time.sleep(1.5)
    assert httpx.get(url, params={"stockade_token": short}).status_code == 401
    # A token dies with its sandbox.
    second_token = token_for(srv, keys["owner"], second.id)
    second.kill()
    assert httpx.get(elsewhere, params={"stockade_token": second_token}).status_code == 404


def test_websocket_is_refused_without_credentials(srv: Server, keys: dict[str, str], sb: Sandbox) -> None:
    url = f"ws://127.0.0.1:{srv.port}/sandboxes/{sb.id}/ports/{WS_PORT}/"
    for headers in ({}, bearer(keys["other"])):
        with pytest.raises(InvalidStatus):
            with ws_connect(url, additional_headers=headers, proxy=None):
                pass


# -- WebSocket --------------------------------------------------------------------------------
def echo_round_trip(url: str, **kwargs: Any) -> dict[str, Any]:
    with ws_connect(url, proxy=None, max_size=4 << 20, **kwargs) as ws:
        hello = json.loads(ws.recv(timeout=30))
        ws.send("hi there")
        assert ws.recv(timeout=30) == "hi there"
        blob = bytes(range(256)) * 1024  # 256 KiB, several tunnel frames
        ws.send(blob)
        assert ws.recv(timeout=30) == blob
        ws.ping()
    return dict(hello)


def test_websocket_echo_by_path_and_host(srv: Server, keys: dict[str, str], sb: Sandbox) -> None:
    hello = echo_round_trip(
        f"ws://127.0.0.1:{srv.port}/sandboxes/{sb.id}/ports/{WS_PORT}/room?x=1",
        additional_headers=bearer(keys["owner"]),
    )
    assert hello["path"] == "/room?x=1"
    assert hello["authorization"] is None
    token = token_for(srv, keys["owner"], sb.id)
    hello = echo_round_trip(
        f"ws://{WS_PORT}-{sb.id}.{DOMAIN}/chat?stockade_token={token}",
        sock=socket.create_connection(("127.0.0.1", srv.port)),
    )
    assert hello["path"] == "/chat"


def test_gvisor_smoke(srv: Server, keys: dict[str, str], make: Callable[..., Sandbox]) -> None:
    sb = make("gvisor")
    r = httpx.get(path_url(srv, sb.id, HTTP_PORT, "/hello.txt"), headers=bearer(keys["owner"]))
    assert (r.status_code, r.text) == (200, "hello from a sandbox with no network\n")
    echo_round_trip(
        f"ws://127.0.0.1:{srv.port}/sandboxes/{sb.id}/ports/{WS_PORT}/",
        additional_headers=bearer(keys["owner"]),
    )


# -- PTY over the remote server -----------------------------------------------------------
def test_remote_pty_needs_the_owner_key(srv: Server, keys: dict[str, str]) -> None:
    remote, owner, other = srv, keys["owner"], keys["other"]
    with Sandbox.create(api_url=remote.url, api_key=owner, timeout=120) as sb:
        seen: list[bytes] = []
        term = sb.pty.create(on_data=seen.append, cmd="echo remote-o''k; exit 5")
        assert term.wait().exit_code == 5
        assert b"remote-ok" in b"".join(seen)
        url = f"ws://127.0.0.1:{remote.port}/sandboxes/{sb.id}/pty?cmd=id"
        for headers in ({}, {"Authorization": f"Bearer {other}"}, {"Authorization": "Bearer sk_forged_key"}):
            with pytest.raises(InvalidStatus):
                with ws_connect(url, additional_headers=headers, proxy=None):
                    pass
        # Through the SDK, another tenant's key reads as a missing sandbox.
        api = Api(ConnectionConfig(api_url=remote.url, api_key=other))
        stranger = Sandbox(AsyncSandbox(api, sb.info))
        with pytest.raises(SandboxNotFound):
            stranger.pty.create()
        stranger.close()

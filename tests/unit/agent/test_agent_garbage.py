"""The agent against garbage: a bad frame ends its stream (or, if the framing is broken, its
connection), never the agent. The agent runs as it does in a sandbox, under ``python3 -I -S``,
on a unix socket in a temporary directory; no root needed."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.agent import protocol as p

AGENT_PARENT = Path(__file__).resolve().parents[3] / "src" / "stockade"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real agent process; yields its socket path and checks that it never died."""
    sock = str(tmp_path_factory.mktemp("agent") / "agent.sock")
    code = (
        f"import sys; sys.path[:0] = [{str(AGENT_PARENT)!r}]; from agent.main import main; "
        f"main(['--listen', {sock!r}])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(sock):
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        assert time.monotonic() < deadline, "the agent did not listen"
        time.sleep(0.01)
    yield sock
    alive = proc.poll() is None
    proc.kill()
    output = proc.communicate()[0].decode(errors="replace")
    assert alive, f"the agent died: {output}"


class Peer:
    """The host's end of one raw connection, speaking frames by hand."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:  # a full accept backlog (a busy machine) answers EAGAIN: back-pressure
            try:
                self.sock.connect(path)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.sock.close()
                    raise
                time.sleep(0.01)

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def open(self, stream: int, method: str, params: dict[str, Any] | None = None) -> None:
        self.send(p.encode_json(p.Kind.OPEN, stream, {"method": method, "params": params or {}}))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def frame(self) -> tuple[int, p.Kind, bytes]:
        length, stream, kind = p.parse_header(self._exact(p.HEADER.size))
        return stream, kind, self._exact(length)

    def end_of(self, stream: int) -> dict[str, Any]:
        """Frames until ``stream``'s END; return its JSON."""
        while True:
            sid, kind, payload = self.frame()
            if sid == stream and kind is p.Kind.END:
                result: dict[str, Any] = json.loads(payload)
                return result

    def hung_up(self) -> bool:
        """True once the agent has closed this connection."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def assert_serves(path: str) -> None:
    """A new connection gets a hello: the agent is alive and well."""
    peer = Peer(path)
    try:
        peer.open(1, "hello")
        end = peer.end_of(1)
        assert end["ok"] and end["result"]["protocol"] == p.PROTOCOL_VERSION
    finally:
        peer.close()


def header(length: int, stream: int, kind: int) -> bytes:
    return struct.pack(">IIB", length, stream, kind)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(header(p.MAX_PAYLOAD + 1, 1, p.Kind.OPEN), id="oversized-length"),
        pytest.param(header(0xFFFFFFFF, 1, p.Kind.DATA), id="max-u32-length"),
        pytest.param(header(2, 1, 99) + b"{}", id="unknown-kind"),
        pytest.param(header(0, 1, 0), id="kind-zero"),
    ],
)
def test_broken_framing_closes_only_that_connection(agent: str, garbage: bytes) -> None:
    bystander = Peer(agent)
    bystander.open(7, "process.start", {"cmd": "sleep 1; echo survived", "user": None})
    peer = Peer(agent)
    peer.send(garbage)
    assert peer.hung_up()
    peer.close()
    assert bystander.end_of(7)["ok"], "another connection's stream was harmed"
    bystander.close()
    assert_serves(agent)


def test_random_bytes_never_kill_the_agent(agent: str) -> None:
    rng = __import__("random").Random(7)
    for _ in range(20):
        peer = Peer(agent)
        try:
            peer.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096))))
        except (BrokenPipeError, ConnectionResetError):
            pass
        peer.close()
    assert_serves(agent)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(b"{not json", "bad_request", id="invalid-json"),
        pytest.param(b"\xff\xfe\x00", "bad_request", id="not-utf8"),
        pytest.param(b"[1, 2, 3]", "bad_request", id="not-an-object"),
        pytest.param(b'{"method": 5}', "bad_request", id="method-not-a-string"),
        pytest.param(b'{"method": "hello", "params": [1]}', "bad_request", id="params-not-an-object"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "bad_request", id="nested-too-deep"),
        pytest.param(b'{"method": "no.such.method"}', "unknown_method", id="unknown-method"),
        pytest.param(
            b'{"method": "process.start", "params": {"cmd": 42}}', "bad_request", id="bad-parameter-type"
        ),
        pytest.param(b'{"method": "fs.read", "params": {"path": ""}}', "bad_request", id="empty-path"),
    ],
)
def test_bad_open_ends_only_its_stream(agent: str, payload: bytes, code: str) -> None:
    peer = Peer(agent)
    try:
        peer.send(p.encode(p.Kind.OPEN, 3, payload))
        end = peer.end_of(3)
        assert end["ok"] is False and end["error"]["code"] == code, end
        peer.open(4, "hello")  # the same connection goes on
        assert peer.end_of(4)["ok"]
    finally:
        peer.close()


def test_frames_for_unknown_or_misused_streams(agent: str) -> None:
    peer = Peer(agent)
    try:
        for kind in (p.Kind.DATA, p.Kind.CLOSE, p.Kind.CANCEL, p.Kind.WINDOW):
            peer.send(p.encode(kind, 999, b"\x00\x00\x00\x01"))  # no such stream: ignored
        peer.open(5, "process.start", {"cmd": "sleep 5", "stdin": True})
        sid, kind, _ = peer.frame()
        assert (sid, kind) == (5, p.Kind.EVENT)
        peer.send(p.encode(p.Kind.WINDOW, 5, b"\x01"))  # a WINDOW must carry 4 bytes
        end = peer.end_of(5)
        assert end["ok"] is False and end["error"]["code"] == "bad_request"
        peer.open(6, "process.start", {"cmd": "sleep 5"})
        peer.open(6, "hello")  # reopening a stream that is still open
        end = peer.end_of(6)
        assert end["ok"] is False and "already open" in end["error"]["message"]
        peer.open(8, "hello")
        assert peer.end_of(8)["ok"]
    finally:
        peer.close()
    assert_serves(agent)


def test_hanging_up_mid_frame_is_harmless(agent: str) -> None:
    peer = Peer(agent)
    peer.send(header(1000, 1, p.Kind.OPEN) + b'{"method":')
    peer.close()
    assert_serves(agent)

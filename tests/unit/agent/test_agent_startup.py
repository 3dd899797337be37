"""The agent's start-up imports only what the first command needs (every sandbox pays for
each module it imports; under gVisor each is many round trips), and the requests whose modules
it imports late still work. The agent runs as in a sandbox: ``python3 -I -S``, PID 1 aside."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.agent import main as agent_main
from stockade.agent import protocol as p

AGENT_PARENT = Path(__file__).resolve().parents[3] / "src" / "stockade"
PYTHON = shutil.which("/usr/bin/python3") or sys.executable
TIMEOUT = 10.0
#: What no first command needs: argparse, shutil (with bz2, lzma), tempfile (with random),
#: typing, and ctypes.util (whose find_library ran ``ldconfig -p`` at every start).
NOT_AT_START = {"argparse", "shutil", "bz2", "lzma", "tempfile", "random", "typing", "ctypes.util", "gettext"}
#: What the first command needs, imported before the agent listens (a pooled sandbox has
#: paid for them before it is claimed).
AT_START = {"json", "socket", "threading", "subprocess", "ctypes", "agent.processes"}


class Agent:
    """A real agent process started with ``-X importtime``, and one connection to it."""

    def __init__(self, directory: Path) -> None:
        sock = str(directory / "agent.sock")
        code = (
            f"import sys; sys.path[:0] = [{str(AGENT_PARENT)!r}]; from agent.main import main; "
            f"main(['--listen', {sock!r}])"
        )
        self.proc = subprocess.Popen(
            [PYTHON, "-X", "importtime", "-I", "-S", "-c", code],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.settimeout(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                self.conn.connect(sock)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert self.proc.poll() is None, self.stop()
                assert time.monotonic() < deadline, "the agent did not listen"
                time.sleep(0.01)
        self.next_id = 1

    def call(self, method: str, params: dict[str, Any], body: bytes | None = None) -> Any:
        """Open a stream, send ``body`` (then CLOSE) if given, return the END payload."""
        stream, self.next_id = self.next_id, self.next_id + 1
        self.conn.sendall(p.encode_json(p.Kind.OPEN, stream, {"method": method, "params": params}))
        if body is not None:
            self.conn.sendall(p.encode_data(stream, p.Channel.BODY, body))
            self.conn.sendall(p.encode(p.Kind.CLOSE, stream))
        while True:
            length, got, kind = p.parse_header(self.conn.recv(p.HEADER.size, socket.MSG_WAITALL))
            payload = self.conn.recv(length, socket.MSG_WAITALL) if length else b""
            if got == stream and kind is p.Kind.END:
                return json.loads(payload)

    def stop(self) -> list[str]:
        """Stop the agent; the modules it had imported, in order."""
        self.conn.close()
        self.proc.kill()
        err = self.proc.communicate(timeout=TIMEOUT)[1].decode(errors="replace")
        return [
            line.rsplit("|", 1)[1].strip()
            for line in err.splitlines()
            if line.startswith("import time:") and "imported package" not in line
        ]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    found = Agent(tmp_path)
    yield found
    if found.proc.poll() is None:
        found.stop()


def test_startup_imports_only_what_the_first_command_needs(agent: Agent) -> None:
    assert agent.call("hello", {})["result"]["protocol"] == p.PROTOCOL_VERSION
    modules = set(agent.stop())
    assert AT_START <= modules, f"missing at start: {AT_START - modules}"
    assert not NOT_AT_START & modules, f"imported at start: {sorted(NOT_AT_START & modules)}"


def test_the_late_imports_serve_their_requests(agent: Agent, tmp_path: Path) -> None:
    """fs.write (tempfile) and fs.remove of a directory (shutil) import what they need."""
    target = tmp_path / "tree" / "deep" / "file.txt"
    written = agent.call("fs.write", {"path": str(target), "user": "root"}, b"late imports")
    assert written["ok"], written
    assert target.read_bytes() == b"late imports"
    removed = agent.call("fs.remove", {"path": str(tmp_path / "tree"), "user": "root"})
    assert removed["ok"], removed
    assert not (tmp_path / "tree").exists()
    modules = agent.stop()
    assert {"tempfile", "shutil"} <= set(modules)
    assert modules.index("agent.main") < modules.index("tempfile")


@pytest.mark.parametrize(
    "argv", [[], ["--listen"], ["--listen", ""], ["--port", "x"], ["--listen", "/a", "--device", "auto"]]
)
def test_bad_arguments_get_the_usage(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match="usage: stockade-agent"):
        agent_main.parse_args(argv)


def test_arguments() -> None:
    assert agent_main.parse_args(["--listen", "/run/a.sock"]) == ("--listen", "/run/a.sock")
    assert agent_main.parse_args(["--device", "auto"]) == ("--device", "auto")

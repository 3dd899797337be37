"""The JavaScript executor outside any sandbox, on the host's ``node`` (the one scripts/install
--test puts in the virtualenv, or the system's): what the sandbox tests cannot reach cheaply --
code that ignores the interrupt, output a timer prints after its cell ended, and what a thrown
non-error becomes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

INTERPRETER = Path(__file__).resolve().parents[3] / "src" / "stockade" / "interpreter"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    path = f"{sys.prefix}/node/bin:/usr/local/bin:/usr/bin:/bin"  # scripts/install --test puts one there
    if shutil.which("node", path=path) is None:
        pytest.fail("no node on the host: run scripts/install --test")
    package = tmp_path / "root" / "stockade_interpreter"  # as the engine uploads it
    package.mkdir(parents=True)
    for source in INTERPRETER.glob("*.py"):
        shutil.copy(source, package / source.name)
    proc = subprocess.Popen(
        [sys.executable, "-I", str(package / "__main__.py"), "--language", "js"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"PATH": path},
    )
    assert _events(proc)[-1]["type"] == "ready"
    yield proc
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()


def _events(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    events = []
    while True:
        line = proc.stdout.readline()
        assert line, f"the server ended early: {events}"
        events.append(json.loads(line))
        if events[-1]["type"] in ("end", "ready", "fatal"):
            return events


def run(proc: subprocess.Popen[bytes], cell_id: str, code: str, timeout: float = 30) -> list[dict[str, Any]]:
    assert proc.stdin is not None
    request = {"op": "execute", "id": cell_id, "code": code, "timeout": timeout}
    proc.stdin.write(json.dumps(request).encode() + b"\n")
    proc.stdin.flush()
    return [{k: v for k, v in e.items() if k != "id"} for e in _events(proc)]


def test_interrupts_and_restarts(server: subprocess.Popen[bytes]) -> None:
    assert run(server, "1", "let kept = 41")[-1]["status"] == "ok"
    # synchronous code stops at SIGINT; the state survives
    assert run(server, "2", "while (true) {}", timeout=1)[-1]["status"] == "timeout"
    assert run(server, "3", "kept + 1")[0]["data"] == {"text/plain": "42"}
    # a loop in a callback after an await cannot see the signal: node is restarted
    events = run(server, "4", "await null; while (true) {}", timeout=1)
    assert [e["type"] for e in events] == ["error", "end"] and events[0]["name"] == "KernelRestarted"
    assert run(server, "5", "typeof kept")[0]["data"] == {"text/plain": "'undefined'"}


def test_late_output_and_thrown_values(server: subprocess.Popen[bytes]) -> None:
    run(server, "1", "setTimeout(() => console.log('late'), 50); 'now'")
    time.sleep(0.5)  # the timer prints between cells: that output belongs to no cell
    events = run(server, "2", "console.log('mine')")
    assert [e.get("text") for e in events if e["type"] == "stdout"] == ["mine\n"]
    # while a cell awaits, a timer of an earlier cell prints into it
    run(server, "3", "setTimeout(() => console.log('into 4'), 50)")
    events = run(server, "4", "await new Promise(r => setTimeout(r, 300)); 1")
    assert [e.get("text") for e in events if e["type"] == "stdout"] == ["into 4\n"]
    events = run(server, "5", "throw {code: 7}")
    assert events[0] == {"type": "error", "name": "Error", "value": "{ code: 7 }", "traceback": ""}
    assert run(server, "6", "undefined") == [{"type": "end", "status": "ok", "execution_count": 6}]

"""The interpreter server laid out as the engine uploads it, started as the engine starts it
(``python3 -I .../stockade_interpreter/__main__.py``), outside any sandbox: a bash context
(standard library only) serves requests over its pipes, keeps state, and cleans up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

INTERPRETER = Path(__file__).resolve().parents[3] / "src" / "stockade" / "interpreter"


def _events(proc: subprocess.Popen[bytes], until: str) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    events = []
    while True:
        line = proc.stdout.readline()
        assert line, f"the server ended early: {events}"
        events.append(json.loads(line))
        if events[-1]["type"] == until:
            return events


def test_entry_serves_a_bash_context(tmp_path: Path) -> None:
    package = tmp_path / "root" / "stockade_interpreter"
    package.mkdir(parents=True)
    for source in INTERPRETER.glob("*.py"):
        shutil.copy(source, package / source.name)
    # A module named like ours in the working directory must not be picked up.
    (tmp_path / "server.py").write_text("raise SystemExit('shadowed')\n")
    proc = subprocess.Popen(
        [sys.executable, "-I", str(package / "__main__.py"), "--language", "bash"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.stdin is not None
    try:
        ready = _events(proc, "ready")[-1]
        assert ready["protocol"] == 1 and ready["language"] == "bash"

        def run(execution_id: str, code: str) -> list[dict[str, Any]]:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"op": "execute", "id": execution_id, "code": code}).encode() + b"\n")
            proc.stdin.flush()
            return _events(proc, "end")

        first = run("e1", 'x=41; cd /tmp; echo "hi $((x + 1))"; false')
        assert "".join(e["text"] for e in first if e["type"] == "stdout") == "hi 42\n"
        assert {"id": "e1", "type": "error", "name": "ExitCode", "value": "1", "traceback": ""} in first
        assert first[-1] == {"id": "e1", "type": "end", "status": "ok", "execution_count": 1}
        second = run("e2", "echo $x $PWD")  # variables and cwd persist between cells
        assert "".join(e["text"] for e in second if e["type"] == "stdout") == "41 /tmp\n"
        proc.stdin.write(b'{"op": "shutdown"}\n')
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

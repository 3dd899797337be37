"""Why a sandbox is where it is (docs/persistence.md, "Why a sandbox ended", "Events", "Idle
policy"): end records, the per-tenant event stream, usage history, auto-resume, idle timeouts,
and bombs that end the process rather than the sandbox (or, where a tier cannot, end the
sandbox at once with the reason).

One server for the module, two tenants; every check goes through the real server, the SDK or
the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from server_harness import Server, finish, needs_root, new_data_dir

from stockade import ConflictError, Sandbox, SandboxNotFound, SandboxUnavailable
from stockade import host

pytestmark = pytest.mark.root
STOCKADE = str(Path(sys.executable).with_name("stockade"))
MEMORY_BOMB = ["python3", "-c", "b = []\nwhile True: b.append(bytearray(8 << 20))"]
FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 3"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    needs_root()
    srv = Server(new_data_dir(), STOCKADE_USAGE_INTERVAL="0.5").start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    return {"owner": server.new_key("owner"), "other": server.new_key("other")}


def _sdk(server: Server, key: str) -> dict[str, str]:
    return {"api_url": server.url, "api_key": key}


def _create(server: Server, key: str, **spec: Any) -> Sandbox:
    return Sandbox.create(**_sdk(server, key), **{"timeout": 120, **spec})


def _cli_info(server: Server, key: str, sandbox_id: str) -> str:
    env = {**os.environ, "STOCKADE_API_URL": server.url, "STOCKADE_API_KEY": key}
    done = subprocess.run(
        [STOCKADE, "sandbox", "info", sandbox_id], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _wait_end(server: Server, key: str, sandbox_id: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    with server.client(key) as c:
        while time.monotonic() < deadline:
            r = c.get(f"/sandboxes/{sandbox_id}/end")
            if r.status_code == 200:
                return dict(r.json())
            assert r.status_code == 409, r.text  # still exists
            time.sleep(0.2)
    pytest.fail(f"sandbox {sandbox_id} did not end within {within:.0f} s")


class EventReader:
    """A client of ``GET /events`` reading in a thread."""

    def __init__(self, server: Server, key: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._client = httpx.Client(
            base_url=server.url,
            timeout=httpx.Timeout(5, read=None),
            headers={"Authorization": f"Bearer {key}"},
        )
        self._open = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._open.wait(10), "the event stream did not open"

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/events") as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                self._open.set()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))
        except (httpx.HTTPError, RuntimeError):
            return

    def of(self, sandbox_id: str) -> list[tuple[str, str | None]]:
        return [(e["state"], e["reason"]) for e in self.events if e["sandbox_id"] == sandbox_id]

    def wait_for(self, sandbox_id: str, state: str, within: float = 10) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if any(s == state for s, _ in self.of(sandbox_id)):
                return
            time.sleep(0.1)
        pytest.fail(f"no {state!r} event for {sandbox_id}: {self.events}")

    def close(self) -> None:
        self._client.close()
        self._thread.join(10)


def test_killed_sandbox_is_404_and_its_end_record_says_why_to_its_owner_only(
    server: Server, keys: dict[str, str]
) -> None:
    owner_events, other_events = EventReader(server, keys["owner"]), EventReader(server, keys["other"])
    try:
        sb = _create(server, keys["owner"], metadata={"job": "k"}, persistence="workspace")
        mine = _create(server, keys["other"])
        with server.client(keys["owner"]) as c:
            assert c.get(f"/sandboxes/{sb.id}/end").status_code == 409  # it has not ended
        sb.pause()
        sb.connect()
        sb.stop()
        before = time.time()
        assert Sandbox.kill(sb.id, **_sdk(server, keys["owner"])) is True
        with pytest.raises(SandboxNotFound):  # the sandbox itself is gone
            Sandbox.get_info(sb.id, **_sdk(server, keys["owner"]))
        end = Sandbox.get_end(sb.id, **_sdk(server, keys["owner"]))
        assert (end.reason, end.message) == ("killed", "killed by the user")
        assert before <= end.ended_at <= time.time() and end.sandbox.metadata == {"job": "k"}
        assert end.sandbox.state == "ended"
        out = _cli_info(server, keys["owner"], sb.id)
        assert "state: ended" in out and "reason: killed" in out, out
        # Another tenant cannot tell it from a sandbox that never existed.
        with server.client(keys["other"]) as c:
            theirs, never = c.get(f"/sandboxes/{sb.id}/end"), c.get("/sandboxes/sb" + "0" * 18 + "/end")
            assert theirs.status_code == 404 == never.status_code
            assert theirs.json()["code"] == never.json()["code"] == "sandbox_not_found"
        owner_events.wait_for(sb.id, "ended")
        assert owner_events.of(sb.id) == [
            ("running", "created"),
            ("paused", None),
            ("running", None),
            ("stopped", None),
            ("ended", "killed"),
        ]
        mine.kill()
        other_events.wait_for(mine.id, "ended")
        assert owner_events.of(mine.id) == [] and other_events.of(sb.id) == []
        sb.close()
        mine.close()
    finally:
        owner_events.close()
        other_events.close()


def test_timeout_ends_with_reason_timeout(server: Server, keys: dict[str, str]) -> None:
    sb = _create(server, keys["owner"], timeout=2)
    end = _wait_end(server, keys["owner"], sb.id, within=30)
    assert (end["reason"], end["message"]) == ("timeout", "ended by its timeout")
    sb.close()


def test_memory_bomb_kills_the_process_and_the_container_sandbox_stays(
    server: Server, keys: dict[str, str]
) -> None:
    events = EventReader(server, keys["owner"])
    sb = _create(server, keys["owner"], memory_mb=128)
    try:
        bomb = sb.commands.run(MEMORY_BOMB, background=True)
        slowest = 0.0
        while True:  # the agent keeps answering within a second while the bomb runs
            started = time.monotonic()
            assert sb.files.exists("/home/user")
            slowest = max(slowest, time.monotonic() - started)
            if sb.get_info().reason == "out_of_memory":
                break
            time.sleep(0.1)
        result = bomb.wait()
        assert (result.status, result.oom_killed) == ("oom_killed", True)
        assert slowest < 1.0, f"the agent took {slowest:.2f} s to answer during the bomb"
        assert sb.commands.run("echo still-here").stdout == "still-here\n"
        info = sb.get_info()
        assert (info.state, info.reason, info.message) == (
            "running",
            "out_of_memory",
            "out of memory (python3)",
        )
        assert "message: out of memory (python3)" in _cli_info(server, keys["owner"], sb.id)
        events.wait_for(sb.id, "running")
        assert any(
            e["kind"] == "process" and e["message"] == "out of memory (python3)"
            for e in events.events
            if e["sandbox_id"] == sb.id
        ), events.events
    finally:
        events.close()
        sb.kill()
        sb.close()


def test_fork_bomb_is_refused_and_the_container_sandbox_keeps_answering(
    server: Server, keys: dict[str, str]
) -> None:
    sb = _create(server, keys["owner"])
    try:
        sb.files.write("/home/user/kept", "before the bomb\n")
        bomb = sb.commands.run(FORK_BOMB, background=True, timeout=10)
        slowest, started_at = 0.0, time.monotonic()
        while time.monotonic() - started_at < 6:  # the agent answers within a second throughout
            started = time.monotonic()
            assert sb.files.read("/home/user/kept") == "before the bomb\n"
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        assert slowest < 1.0, f"the agent took {slowest:.2f} s to answer during the bomb"
        with contextlib.suppress(Exception):  # the bomb ends by its timeout or the pids limit
            bomb.wait()
        assert sb.commands.run("echo still-here").stdout == "still-here\n"
        deadline = time.monotonic() + 5
        while sb.get_info().reason != "pids_limit" and time.monotonic() < deadline:
            time.sleep(0.2)
        info = sb.get_info()
        assert (info.state, info.reason) == ("running", "pids_limit"), info
        assert "process limit reached" in (info.message or "")
    finally:
        sb.kill()
        sb.close()


def test_memory_bomb_ends_a_gvisor_sandbox_at_once_with_the_reason(
    server: Server, keys: dict[str, str]
) -> None:
    sb = _create(server, keys["owner"], isolation="gvisor", memory_mb=128)
    with pytest.raises(SandboxUnavailable, match="out of memory"):
        sb.commands.run(MEMORY_BOMB, timeout=60)
    end = _wait_end(server, keys["owner"], sb.id, within=10)
    assert (end["reason"], end["message"]) == ("out_of_memory", "out of memory (python3)")
    out = _cli_info(server, keys["owner"], sb.id)
    assert "reason: out_of_memory" in out and "message: out of memory (python3)" in out, out
    assert Sandbox.get_end(sb.id, **_sdk(server, keys["owner"])).message == "out of memory (python3)"
    sb.close()


def test_fork_bomb_ends_a_gvisor_sandbox_at_once_with_the_reason(
    server: Server, keys: dict[str, str]
) -> None:
    sb = _create(server, keys["owner"], isolation="gvisor")
    with pytest.raises(SandboxUnavailable, match="process limit"):
        sb.commands.run(FORK_BOMB, timeout=30)
    end = _wait_end(server, keys["owner"], sb.id, within=10)
    assert end["reason"] == "pids_limit" and "process limit" in end["message"]
    sb.close()


def test_usage_history_for_charts(server: Server, keys: dict[str, str]) -> None:
    sb = _create(server, keys["owner"])
    try:
        sb.commands.run("head -c 20000000 /dev/urandom > /home/user/blob")
        time.sleep(2.5)
        history = sb.usage()
        assert history.interval == 0.5 and len(history.items) >= 3
        last = history.items[-1]
        assert last.memory_bytes > 0 and last.memory_limit_bytes > 0 and last.pids >= 1
        assert (last.disk_bytes or 0) >= 20_000_000
        assert [s.time for s in history.items] == sorted(s.time for s in history.items)
        with server.client(keys["other"]) as c:
            assert c.get(f"/sandboxes/{sb.id}/usage").status_code == 404
    finally:
        sb.kill()
        sb.close()


def test_auto_resume_wakes_a_paused_or_stopped_sandbox_on_use(server: Server, keys: dict[str, str]) -> None:
    plain = _create(server, keys["owner"])
    sb = _create(server, keys["owner"], persistence="workspace", auto_resume=True)
    try:
        assert sb.info.auto_resume is True
        plain.pause()
        with pytest.raises(ConflictError):  # without the option: 409, as before
            plain.commands.run("true")
        sb.commands.run("echo kept > /home/user/f")
        sb.pause()
        assert sb.commands.run("cat /home/user/f").stdout == "kept\n"  # resumed by the request
        assert sb.get_info().state == "running"
        sb.stop()
        assert sb.files.read("/home/user/f") == "kept\n"  # started by the request
        assert sb.get_info().state == "running"
    finally:
        for s in (plain, sb):
            s.kill()
            s.close()


def test_idle_timeout_spares_a_sandbox_that_runs_a_command(server: Server, keys: dict[str, str]) -> None:
    sb = _create(server, keys["owner"], timeout=3, idle_timeout=True)
    sb.commands.run("sleep 7", background=True)
    time.sleep(5.5)  # past its timeout, but a command runs: not idle
    assert sb.get_info().state == "running"
    end = _wait_end(server, keys["owner"], sb.id, within=20)  # idle once the command ended
    assert end["reason"] == "timeout"
    assert end["ended_at"] - sb.info.created_at >= 7  # not before its command ended
    sb.close()


def test_sandbox_gone_over_a_restart_ends_with_host_lost_for_its_owner(
    server: Server, keys: dict[str, str]
) -> None:
    sb = _create(server, keys["owner"], timeout=600)
    cgroup = f"{host.cgroup_parent(server.data_dir)}/{sb.id}"
    server.stop()  # sandboxes outlive the server...
    try:
        for pid in host.cgroup_pids(cgroup):  # ...but this one dies while it is down
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        server.start()
    with server.client(keys["owner"]) as c:
        assert c.get(f"/sandboxes/{sb.id}").status_code == 404
        end = c.get(f"/sandboxes/{sb.id}/end").json()
    assert (end["reason"], end["message"]) == ("host_lost", "lost with its host (restart or crash)")
    with server.client(keys["other"]) as c:
        assert c.get(f"/sandboxes/{sb.id}/end").status_code == 404
    sb.close()

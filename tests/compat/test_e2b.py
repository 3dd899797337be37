"""Unmodified E2B SDKs (PyPI ``e2b`` and ``e2b-code-interpreter``) against a real Stockade
server, configured only by E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import sys
import struct
import threading
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from e2b import AsyncSandbox, PtySize, Sandbox, SandboxQuery, SandboxState, Template
from e2b import CommandExitException
from e2b.exceptions import (
    AuthenticationException,
    RateLimitException,
    SandboxException,
    NotFoundException,
    SandboxNotFoundException,
    SandboxNotRunningException,
    TimeoutException,
)
from e2b_code_interpreter import AsyncSandbox as AsyncCodeSandbox
from e2b_code_interpreter import Sandbox as CodeSandbox
from server_harness import STOCKADE, Server, finish, needs_root, new_data_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]
SDK_VERSION = "2.63.0"
CI_VERSION = "2.11.5"
DOMAIN = "sbx.test"  # per-sandbox host names, reached with explicit Host headers


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    needs_root()
    srv = Server(new_data_dir(), STOCKADE_PROXY_DOMAIN=DOMAIN).start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    """One key per tenant; the E2B variables point the SDK at the server as tenant A."""
    found = {"a": server.new_key("e2b-a"), "b": server.new_key("e2b-b")}
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(
        E2B_API_URL=server.url + "/e2b", E2B_SANDBOX_URL=server.url + "/e2b", E2B_API_KEY=found["a"]
    )
    yield found
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def sandbox(keys: dict[str, str]) -> Iterator[Sandbox]:
    sb = Sandbox.create(timeout=300)
    yield sb
    sb.kill()


def raw(server: Server, key: str | None = None) -> httpx.Client:
    """A plain HTTP client on the /e2b surface, as an attacker would use it."""
    return httpx.Client(base_url=server.url + "/e2b", timeout=60, headers={"X-API-Key": key} if key else {})


def test_sdk_is_the_pinned_release() -> None:
    assert version("e2b") == SDK_VERSION and version("e2b-code-interpreter") == CI_VERSION


def test_commands(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("echo out; echo err >&2; pwd")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n/home/user\n", "err\n", 0)
    with pytest.raises(CommandExitException) as failed:
        sandbox.commands.run("echo partial; exit 3")
    assert failed.value.exit_code == 3 and failed.value.stdout == "partial\n"
    r = sandbox.commands.run("echo $GREETING; pwd; whoami", envs={"GREETING": "hi"}, cwd="/tmp")
    assert r.stdout == "hi\n/tmp\nuser\n"
    assert sandbox.commands.run("whoami", user="root").stdout == "root\n"
    seen: list[tuple[float, str]] = []
    loop = "for i in 1 2 3; do echo line$i; sleep 0.3; done"
    sandbox.commands.run(loop, on_stdout=lambda s: seen.append((time.monotonic(), s)))
    assert "".join(s for _, s in seen) == "line1\nline2\nline3\n"
    assert seen[-1][0] - seen[0][0] > 0.4  # streamed as printed, not all at the end
    handle = sandbox.commands.run(loop, background=True)
    assert handle.pid > 0
    lines: list[str] = []
    result = handle.wait(on_stdout=lines.append)
    assert result.exit_code == 0 and "".join(lines) == result.stdout == "line1\nline2\nline3\n"


def test_processes_stdin_list_kill(sandbox: Sandbox) -> None:
    cat = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.send_stdin(cat.pid, "typed\n")
    sandbox.commands.stream_input(cat.pid, [b"streamed ", "in ", b"parts\n"])
    sandbox.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "typed\nstreamed in parts\n"
    sleeper = sandbox.commands.run("sleep 600", background=True)
    assert sleeper.pid in [p.pid for p in sandbox.commands.list()]
    follower = sandbox.commands.connect(sleeper.pid)
    assert sandbox.commands.kill(sleeper.pid) is True
    with pytest.raises(CommandExitException):
        follower.wait()
    assert sleeper.pid not in [p.pid for p in sandbox.commands.list()]
    assert sandbox.commands.kill(sleeper.pid) is False


def test_create_time_envs_and_metadata(keys: dict[str, str]) -> None:
    sb = Sandbox.create(envs={"FROM_CREATE": "yes"}, metadata={"suite": "e2b-envs"})
    try:
        assert sb.commands.run("echo $FROM_CREATE").stdout == "yes\n"
        assert sb.get_info().metadata == {"suite": "e2b-envs"}
    finally:
        sb.kill()


def test_files(sandbox: Sandbox) -> None:
    files = sandbox.files
    info = files.write("notes/a.txt", "hello")  # relative: under the user's home
    assert info.path == "/home/user/notes/a.txt"
    assert files.read("/home/user/notes/a.txt") == "hello"
    files.write("/home/user/notes/b.bin", b"\x00\x01\xff")
    assert bytes(files.read("/home/user/notes/b.bin", format="bytes")) == b"\x00\x01\xff"
    assert files.exists("/home/user/notes/a.txt") and not files.exists("/home/user/nope")
    assert files.make_dir("/home/user/notes/sub/deep") is True
    assert files.make_dir("/home/user/notes/sub/deep") is False
    top = files.list("/home/user/notes")
    assert [(e.name, e.type.value) for e in top] == [("a.txt", "file"), ("b.bin", "file"), ("sub", "dir")]
    assert "/home/user/notes/sub/deep" in [e.path for e in files.list("/home/user/notes", depth=2)]
    moved = files.rename("/home/user/notes/a.txt", "/home/user/notes/c.txt")
    assert moved.path == "/home/user/notes/c.txt" and files.read(moved.path) == "hello"
    assert files.get_info("/home/user/notes/c.txt").size == 5
    files.remove("/home/user/notes/sub")
    files.remove("/home/user/notes/never-there")  # not an error, as on E2B
    assert not files.exists("/home/user/notes/sub")
    with pytest.raises(NotFoundException):
        files.read("/home/user/notes/missing.txt")
    written = files.write_files(
        [{"path": "/tmp/m1.txt", "data": "one"}, {"path": "/tmp/m2.txt", "data": "two"}]
    )
    assert sorted(w.path for w in written) == ["/tmp/m1.txt", "/tmp/m2.txt"]
    assert (
        sandbox.commands.run("cat /tmp/m1.txt /tmp/m2.txt; stat -c %U /tmp/m1.txt").stdout == "onetwouser\n"
    )


def test_pause_and_connect_keep_processes_and_files(keys: dict[str, str]) -> None:
    sb = Sandbox.create()
    try:
        sb.files.write("/home/user/kept.txt", "kept")
        counter = sb.commands.run(
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done", background=True
        )
        assert sb.pause() is True
        assert Sandbox.get_info(sb.sandbox_id).state == SandboxState.PAUSED
        assert sb.pause() is False  # already paused: 409, read by the SDK as False
        assert sb.is_running() is False
        again = Sandbox.connect(sb.sandbox_id)
        assert again.get_info().state == SandboxState.RUNNING
        assert again.files.read("/home/user/kept.txt") == "kept"
        assert counter.pid in [p.pid for p in again.commands.list()]
    finally:
        sb.kill()


def test_list_with_metadata_state_and_pages(keys: dict[str, str]) -> None:
    made = [Sandbox.create(metadata={"suite": "e2b-list", "n": str(i)}) for i in range(3)]
    try:
        found = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b-list"})).next_items()
        assert [s.sandbox_id for s in found] == [s.sandbox_id for s in reversed(made)]
        one = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b-list", "n": "1"}))
        assert [s.sandbox_id for s in one.next_items()] == [made[1].sandbox_id]
        pages = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b-list"}), limit=2)
        ids = []
        while pages.has_next:
            ids.append([s.sandbox_id for s in pages.next_items()])
        assert ids == [[made[2].sandbox_id, made[1].sandbox_id], [made[0].sandbox_id]]
        paused = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2b-list"}, state=[SandboxState.PAUSED]))
        assert paused.next_items() == []
        later = SandboxQuery(
            metadata={"suite": "e2b-list"}, template="base", started_after=made[1].get_info().started_at
        )
        assert [s.sandbox_id for s in Sandbox.list(query=later).next_items()] == [
            made[2].sandbox_id,
            made[1].sandbox_id,
        ]
        other = SandboxQuery(metadata={"suite": "e2b-list"}, template="code-interpreter-v1")
        assert Sandbox.list(query=other).next_items() == []
    finally:
        for sb in made:
            sb.kill()


def test_kill_timeout_and_metrics(keys: dict[str, str]) -> None:
    sb = Sandbox.create(timeout=60)
    before = sb.get_info().end_at
    sb.set_timeout(600)
    assert (sb.get_info().end_at - before).total_seconds() > 500
    metrics = sb.get_metrics()
    assert metrics and metrics[0].mem_total >= 256 << 20 and metrics[0].cpu_count >= 1
    assert sb.kill() is True
    assert Sandbox.kill(sb.sandbox_id) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sb.sandbox_id)
    assert sb.sandbox_id not in [s.sandbox_id for s in Sandbox.list().next_items()]


def test_run_code(keys: dict[str, str]) -> None:
    with CodeSandbox.create() as sb:
        assert sb.run_code("x = 40").error is None
        out: list[Any] = []
        ex = sb.run_code("print('side'); x + 2", on_stdout=out.append)
        assert ex.text == "42" and ex.logs.stdout == ["side\n"] and ex.error is None
        assert [o.line for o in out] == ["side\n"]
        assert ex.execution_count == 2
        failed = sb.run_code("1 / 0")
        assert failed.error is not None and failed.error.name == "ZeroDivisionError"
        ctx = sb.create_code_context(cwd="/tmp")
        assert sb.run_code("import os; os.getcwd()", context=ctx).text == "'/tmp'"
        assert ctx.id in [c.id for c in sb.list_code_contexts()]
        assert sb.run_code("echo $((6*7))", language="bash").logs.stdout == ["42\n"]
        sb.remove_code_context(ctx)
        assert ctx.id not in [c.id for c in sb.list_code_contexts()]
        chart = sb.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()")
        pngs = [r.png for r in chart.results if r.png]
        assert pngs and base64.b64decode(pngs[0]).startswith(b"\x89PNG")
        table = sb.run_code("import pandas as pd; pd.DataFrame({'a': [1, 2]})")
        assert table.results[0].html and "<table" in table.results[0].html


def test_gvisor_tier_from_metadata(keys: dict[str, str], server: Server) -> None:
    sb = Sandbox.create(metadata={"stockade.isolation": "gvisor"})
    try:
        with server.admin() as admin:
            assert admin.get(f"/sandboxes/{sb.sandbox_id}").json()["isolation"] == "gvisor"
        assert sb.commands.run("cat /proc/version").stdout.startswith("Linux")
        sb.files.write("/home/user/g.txt", "gvisor")
        watcher = sb.files.watch_dir("/home/user")
        sb.files.write("/home/user/w.txt", "watched")
        assert ("w.txt", "WRITE") in _events_until(watcher, {("w.txt", "WRITE")})
        watcher.stop()
        sleeper = sb.commands.run("sleep 600", background=True)
        assert sb.pause() is True  # gVisor: a checkpoint to disk
        again = Sandbox.connect(sb.sandbox_id)
        assert again.files.read("/home/user/g.txt") == "gvisor"
        assert sleeper.pid in [p.pid for p in again.commands.list()]
    finally:
        sb.kill()


def test_idempotency_key_and_v1_create(server: Server, keys: dict[str, str]) -> None:
    with raw(server, keys["a"]) as c:
        body = {"templateID": "base", "timeout": 60, "metadata": {}, "envVars": {}}
        first = c.post("/v2/sandboxes", json=body, headers={"Idempotency-Key": "k-1"})
        again = c.post("/v2/sandboxes", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 201, first.text
        assert first.json()["sandboxID"] == again.json()["sandboxID"]
        v1 = c.post("/sandboxes", json={**body, "secure": True})
        assert v1.status_code == 201 and v1.json()["envdAccessToken"]
        running = c.post(f"/sandboxes/{v1.json()['sandboxID']}/connect", json={"timeout": 90})
        assert running.status_code == 200  # it ran already: 200, not 201
        assert running.json()["envdAccessToken"] == v1.json()["envdAccessToken"]
        fork = c.post(f"/sandboxes/{v1.json()['sandboxID']}/fork", json={})
        assert fork.status_code == 201, fork.text  # E2B's shape: [{"sandbox": Sandbox}]
        (copy,) = fork.json()
        assert copy["sandbox"]["sandboxID"] != v1.json()["sandboxID"]
        assert copy["sandbox"]["envdAccessToken"] and "error" not in copy
        assert c.delete(f"/sandboxes/{copy['sandbox']['sandboxID']}").status_code == 204
        for made in (first, v1):
            assert c.delete(f"/sandboxes/{made.json()['sandboxID']}").status_code == 204
        bad = c.post("/v2/sandboxes", json={"timeout": "soon"})
        assert bad.status_code == 400 and bad.json()["code"] == 400
        assert "templateID" in bad.json()["message"]


def test_bad_api_key_is_refused(keys: dict[str, str]) -> None:
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "0" * 40)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key=keys["a"] + "x").next_items()


def test_other_tenant_cannot_reach_the_sandbox(
    server: Server, keys: dict[str, str], sandbox: Sandbox
) -> None:
    """Tenant B holds a valid key but not tenant A's sandbox: every path reads as missing
    or unauthorised, and A's sandbox is untouched."""
    victim = sandbox.sandbox_id
    sandbox.files.write("/home/user/secret.txt", "a's secret")
    b = {"api_key": keys["b"]}
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(victim, **b)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(victim, **b)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout(victim, 1, **b)
    assert Sandbox.kill(victim, **b) is False
    assert victim not in [s.sandbox_id for s in Sandbox.list(**b).next_items()]
    own = Sandbox.create(**b)
    try:
        envd = {"E2b-Sandbox-Id": victim, "E2b-Sandbox-Port": "49983"}
        with raw(server) as c:
            for headers in (
                {},
                {"X-Access-Token": own._envd_access_token},
                {"X-Access-Token": keys["b"]},
                {"X-API-Key": keys["b"]},
            ):
                r = c.get("/files", params={"path": "/home/user/secret.txt"}, headers={**envd, **headers})
                assert r.status_code == 401 and "secret" not in r.text
                r = c.post("/process.Process/List", json={}, headers={**envd, **headers})
                assert r.status_code == 401
                r = c.post(
                    "/execute",
                    json={"code": "1", "context_id": None, "language": None, "env_vars": None},
                    headers={
                        **envd,
                        "E2b-Sandbox-Port": "49999",
                        **headers,
                        "E2B-Traffic-Access-Token": own.traffic_access_token or "",
                    },
                )
                assert r.status_code == 401
    finally:
        own.kill()
    assert sandbox.files.read("/home/user/secret.txt") == "a's secret"
    assert sandbox.get_info().state == SandboxState.RUNNING


def _envelope(message: bytes, flags: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">BI", flags, len(message) if length is None else length) + message


def test_garbage_connect_bodies_get_clear_errors(server: Server, sandbox: Sandbox) -> None:
    headers = {
        "E2b-Sandbox-Id": sandbox.sandbox_id,
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": sandbox._envd_access_token,
    }
    stream = {**headers, "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
    unary = {**headers, "Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    cases = [
        ("/process.Process/Start", stream, b"\x00\x00"),
        ("/process.Process/Start", stream, _envelope(b'{"process": {}}', length=9999)),
        ("/process.Process/Start", stream, _envelope(b"not json")),
        ("/process.Process/Start", stream, _envelope(b'{"process": {"cmd": 7}}')),
        ("/process.Process/Start", stream, _envelope(b"\x1f\x8b", flags=1)),
        ("/process.Process/Connect", stream, _envelope(b'{"process": {}}')),
        ("/filesystem.Filesystem/Stat", unary, b"\xff\xfe garbage"),
        ("/filesystem.Filesystem/Stat", unary, b"[1, 2]"),
        ("/filesystem.Filesystem/ListDir", unary, b'{"path": "/", "depth": -4}'),
        ("/process.Process/SendInput", unary, b'{"process": {"pid": 1}, "input": {"stdin": "%%%"}}'),
        ("/process.Process/SendSignal", unary, b'{"process": {"pid": 1}, "signal": "NOPE"}'),
        ("/process.Process/Start", stream, _envelope(b"{" * 2 + b" " * (9 << 20))),
    ]
    with raw(server) as c:
        for path, hdrs, body in cases:
            r = c.post(path, content=body, headers=hdrs)
            assert 400 <= r.status_code < 500 or r.status_code == 501, (path, body[:40], r.text)
            error = r.json()
            assert error["code"] in ("invalid_argument", "resource_exhausted", "unimplemented")
            assert error["message"], (path, error)
        r = c.post("/filesystem.Filesystem/Stat", json={"path": "/nope"}, headers=unary)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        for path in ("../../etc/shadow", "/home/user/../../etc/shadow", "/tmp/a\x00b", ""):
            r = c.get("/files", params={"path": path}, headers=headers)
            assert r.status_code == 400 and r.json()["message"], (path, r.text)
            r = c.post(
                "/files",
                params={"path": path},
                content=b"x",
                headers={**headers, "Content-Type": "application/octet-stream"},
            )
            assert r.status_code == 400, (path, r.text)
        r = c.post("/files", files={"file": ("../../../etc/cron.d/x", b"x")}, headers=headers)
        assert r.status_code == 400 and "'..'" in r.json()["message"]
        r = c.post(
            "/files",
            params={"path": "/tmp/z"},
            content=b"not gzip",
            headers={**headers, "Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
        )
        assert r.status_code == 400 and "gzip" in r.json()["message"]
    assert sandbox.commands.run("echo still fine").stdout == "still fine\n"


def test_killed_sandbox_answers_502_on_envd(server: Server, keys: dict[str, str]) -> None:
    sb = Sandbox.create()
    token = sb._envd_access_token
    sb.kill()
    with raw(server) as c:
        headers = {"E2b-Sandbox-Id": sb.sandbox_id, "E2b-Sandbox-Port": "49983", "X-Access-Token": token}
        assert c.get("/health", headers=headers).status_code == 502
        r = c.post("/process.Process/List", json={}, headers=headers)
        assert r.status_code == 502 and r.json()["code"] == 502
    assert sb.is_running() is False


def test_sandbox_killed_during_a_command_ends_the_stream(keys: dict[str, str]) -> None:
    """The SDK sees the sandbox end (not a hang, not a generic error)."""
    sb = Sandbox.create()
    handle = sb.commands.run("echo started; sleep 600", background=True)
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            handle.wait()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    started = time.monotonic()
    Sandbox.kill(sb.sandbox_id)
    waiter.join(30)
    assert not waiter.is_alive() and time.monotonic() - started < 30
    assert isinstance(outcome[0], SandboxNotRunningException), repr(outcome[0])


def test_pty(sandbox: Sandbox) -> None:
    terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    sandbox.pty.send_stdin(terminal.pid, b"stty size; echo pty-$((20+22)); exit 7\n")
    chunks: list[bytes] = []
    with pytest.raises(CommandExitException) as ended:
        terminal.wait(on_pty=chunks.append)
    screen = b"".join(chunks).decode(errors="replace")
    assert ended.value.exit_code == 7
    assert "30 100" in screen and "pty-42" in screen


async def test_async_sdk(keys: dict[str, str]) -> None:
    sb = await AsyncSandbox.create()
    try:
        r = await sb.commands.run("echo async; echo $HOME")
        assert r.stdout == "async\n/home/user\n"
        await sb.files.write("/home/user/async.txt", "from async")
        assert await sb.files.read("/home/user/async.txt") == "from async"
        assert [e.name for e in await sb.files.list("/home/user") if e.name == "async.txt"]
        assert (await sb.get_info()).state == SandboxState.RUNNING
    finally:
        assert await sb.kill() is True
    code = await AsyncCodeSandbox.create()
    try:
        outputs: list[Any] = []
        ex = await code.run_code("print('async out'); 6 * 7", on_stdout=outputs.append)
        assert ex.text == "42" and [o.line for o in outputs] == ["async out\n"]
    finally:
        await code.kill()


def test_signed_file_urls(server: Server, sandbox: Sandbox) -> None:
    """download_url()/upload_url() work with no header at all; forged, altered and expired
    signatures are refused."""
    sandbox.files.write("/home/user/shared.txt", "signed content")
    url = sandbox.download_url("/home/user/shared.txt", use_signature_expiration=60)
    assert httpx.get(url).text == "signed content"
    upload = sandbox.upload_url("/home/user/up.txt")
    r = httpx.post(upload, files={"file": ("/home/user/up.txt", b"uploaded")})
    assert r.status_code == 200, r.text
    assert sandbox.files.read("/home/user/up.txt") == "uploaded"
    other = httpx.get(url.replace("shared.txt", "up.txt"))
    assert other.status_code == 401 and "signed content" not in other.text
    forged = httpx.get(url.replace("signature=v1_", "signature=v1_A"))
    assert forged.status_code == 401
    expired = sandbox.download_url("/home/user/shared.txt", use_signature_expiration=-5)
    r = httpx.get(expired)
    assert r.status_code == 401 and r.json()["message"] == "signature is already expired"
    write_as_read = httpx.post(url, files={"file": ("/home/user/shared.txt", b"overwritten")})
    assert write_as_read.status_code == 401
    assert sandbox.files.read("/home/user/shared.txt") == "signed content"


def test_quota_gives_429_without_retries(server: Server, keys: dict[str, str]) -> None:
    """A tenant at its sandbox quota gets RateLimitException at once (Should-Retry: false)."""
    with server.admin() as admin:
        assert admin.post("/tenants", json={"name": "e2b-small", "max_sandboxes": 1}).status_code == 201
    key = server.new_key("e2b-small")
    first = Sandbox.create(api_key=key)
    try:
        started = time.monotonic()
        with pytest.raises(RateLimitException) as refused:
            Sandbox.create(api_key=key)
        assert "already runs 1 sandboxes" in str(refused.value)
        assert time.monotonic() - started < 2  # not retried with backoff
    finally:
        first.kill()


def test_run_code_timeout_interrupts_the_cell(keys: dict[str, str]) -> None:
    """The client's deadline closes the stream; the cell is interrupted and the context is
    free for the next execution, state kept."""
    with CodeSandbox.create() as sb:
        sb.run_code("kept = 'yes'")
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            sb.run_code("import time\nwhile True: time.sleep(0.1)", timeout=2)
        assert time.monotonic() - started < 15
        ex = sb.run_code("kept", timeout=30)
        assert ex.text == "'yes'" and ex.error is None


def test_snapshots(keys: dict[str, str]) -> None:
    """A snapshot is a template of the tenant's: a new sandbox starts from it; another
    tenant can neither use nor delete it."""
    sb = Sandbox.create()
    try:
        sb.files.write("/home/user/state.txt", "snapshotted")
        snap = sb.create_snapshot()
        assert snap.snapshot_id and snap.names == [snap.snapshot_id]
        listed = Sandbox.list_snapshots(sandbox_id=sb.sandbox_id).next_items()
        assert [s.snapshot_id for s in listed] == [snap.snapshot_id]
    finally:
        sb.kill()
    b = {"api_key": keys["b"]}
    assert Template.exists(snap.snapshot_id) is True
    assert Template.exists(snap.snapshot_id, **b) is False  # not theirs: as missing
    assert Sandbox.list_snapshots(**b).next_items() == []
    with pytest.raises(SandboxException):
        Sandbox.create(snap.snapshot_id, **b)
    assert Sandbox.delete_snapshot(snap.snapshot_id, **b) is False
    child = Sandbox.create(snap.snapshot_id)
    try:
        assert child.files.read("/home/user/state.txt") == "snapshotted"
    finally:
        child.kill()
    assert Sandbox.delete_snapshot(snap.snapshot_id) is True
    assert Sandbox.delete_snapshot(snap.snapshot_id) is False
    assert Template.exists("base") and Template.exists("code-interpreter-v1")
    assert Template.exists("no-such-template") is False


def test_network_policy_and_update(server: Server, keys: dict[str, str]) -> None:
    sb = Sandbox.create(network={"allow_out": ["192.0.2.1"]})
    try:
        with server.admin() as admin:

            def policy() -> Any:
                return admin.get(f"/sandboxes/{sb.sandbox_id}").json()["network"]

            assert policy()["allow_out"] == ["192.0.2.1/32"]
            sb.update_network({"allow_out": ["198.51.100.0/24"], "deny_out": ["198.51.100.7"]})
            assert (policy()["allow_out"], policy()["deny_out"]) == (["198.51.100.0/24"], ["198.51.100.7/32"])
    finally:
        sb.kill()
    closed = Sandbox.create()
    try:
        with pytest.raises(SandboxException, match="network='none'"):
            closed.update_network({"allow_out": ["192.0.2.1"]})
    finally:
        closed.kill()


OLD_SDK = ("e2b==2.45.1", "e2b-code-interpreter==2.9.1")


@pytest.fixture(scope="module")
def old_sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment with the older SDK generation, from PyPI, removed afterwards."""
    venv = tmp_path_factory.mktemp("e2b-old-sdk")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *OLD_SDK], check=True, capture_output=True)
    yield venv / "bin" / "python"
    shutil.rmtree(venv, ignore_errors=True)


def test_older_sdk_generation(server: Server, keys: dict[str, str], old_sdk_python: Path) -> None:
    """e2b 2.45 / e2b-code-interpreter 2.9 (v1 create and connect, httpx transport): commands,
    background, files, pause and connect, list, kill, run_code, with a key from
    `stockade keys create --style e2b` (their client accepts only e2b_<hex>); the same key
    works on Stockade's own API."""
    cli = subprocess.run(
        [STOCKADE, "keys", "create", "--tenant", "e2b-a", "--style", "e2b"],
        env={**os.environ, "STOCKADE_API_URL": server.url, "STOCKADE_API_KEY": server.admin_key or ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    key = cli.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"e2b_[0-9a-f]+", key), cli.stdout + cli.stderr
    with server.client(key) as native:
        assert native.get("/sandboxes").status_code == 200
    env = {**os.environ, "E2B_API_KEY": key}
    run = subprocess.run(
        [str(old_sdk_python), str(Path(__file__).with_name("e2b_old_sdk.py"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0 and run.stdout.strip() == "old sdk ok", run.stderr[-3000:]


def _events_until(handle: Any, wanted: set[tuple[str, str]], seconds: float = 10) -> set[tuple[str, str]]:
    """Poll a watcher until every ``(name, type)`` in ``wanted`` came (or time is up)."""
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + seconds
    while not wanted <= seen and time.monotonic() < deadline:
        seen |= {(e.name, e.type.name) for e in handle.get_new_events()}
        time.sleep(0.05)
    return seen


def test_watch_dir_polling(sandbox: Sandbox) -> None:
    """The sync SDK's watcher (CreateWatcher / GetWatcherEvents / RemoveWatcher)."""
    sandbox.files.make_dir("/home/user/w")
    handle = sandbox.files.watch_dir("/home/user/w", recursive=True)
    sandbox.files.write("/home/user/w/a.txt", "1")
    sandbox.files.make_dir("/home/user/w/sub")
    # The agent watches a new directory before it reports its creation.
    seen = _events_until(handle, {("a.txt", "WRITE"), ("sub", "CREATE")})
    sandbox.files.write("/home/user/w/sub/b.txt", "2")
    sandbox.commands.run("cd /home/user/w && chmod 600 a.txt && mv a.txt c.txt && rm c.txt")
    seen |= _events_until(
        handle,
        {
            ("sub/b.txt", "WRITE"),
            ("a.txt", "CHMOD"),
            ("a.txt", "RENAME"),
            ("c.txt", "CREATE"),
            ("c.txt", "REMOVE"),
        },
    )
    assert {
        ("a.txt", "WRITE"),
        ("sub", "CREATE"),
        ("sub/b.txt", "WRITE"),
        ("a.txt", "CHMOD"),
        ("a.txt", "RENAME"),
        ("c.txt", "CREATE"),
        ("c.txt", "REMOVE"),
    } <= seen, seen
    assert not any(name.startswith(".stockade-") for name, _ in seen)
    handle.stop()
    with pytest.raises(NotFoundException):
        sandbox.files.watch_dir("/home/user/no-such-dir")


async def test_watch_dir_stream(keys: dict[str, str]) -> None:
    """The async SDK's WatchDir stream."""
    sb = await AsyncSandbox.create()
    try:
        seen: list[tuple[str, str]] = []
        handle = await sb.files.watch_dir("/home/user", lambda e: seen.append((e.name, e.type.name)))
        await sb.files.write("/home/user/streamed.txt", "x")
        deadline = time.monotonic() + 10
        while ("streamed.txt", "WRITE") not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert ("streamed.txt", "WRITE") in seen
        await handle.stop()
    finally:
        await sb.kill()


def test_per_sandbox_host_names(server: Server, sandbox: Sandbox) -> None:
    """``49983-{id}.{domain}`` is envd and ``49999-{id}.{domain}`` the code interpreter, as
    the SDK builds them without E2B_SANDBOX_URL; the host, not a header, names the sandbox."""
    token = {"X-Access-Token": sandbox._envd_access_token}
    envd = {"Host": f"49983-{sandbox.sandbox_id}.{DOMAIN}"}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/health", headers=envd).status_code == 204
        sandbox.files.write("/home/user/by-host.txt", "host-routed")
        r = c.get("/files", params={"path": "/home/user/by-host.txt"}, headers={**envd, **token})
        assert r.status_code == 200 and r.text == "host-routed"
        r = c.post("/process.Process/List", json={}, headers={**envd, **token})
        assert r.status_code == 200 and "processes" in r.json()
        assert (
            c.get("/files", params={"path": "/home/user/by-host.txt"}, headers=envd).status_code == 401
        )  # still needs the sandbox's token
        spoofed = {**envd, **token, "E2b-Sandbox-Id": "sb000000000000000000"}
        assert c.post("/process.Process/List", json={}, headers=spoofed).status_code == 200
        r = c.get(
            "/contexts",
            headers={
                "Host": f"49999-{sandbox.sandbox_id}.{DOMAIN}",
                "E2B-Traffic-Access-Token": sandbox.traffic_access_token or "",
            },
        )
        assert r.status_code == 200 and isinstance(r.json(), list)
        gone = c.get("/health", headers={"Host": f"49983-sb000000000000000000.{DOMAIN}"})
        assert gone.status_code == 502 and "was not found" in gone.json()["message"]


JS_SDK = "e2b@2.51.0"


def test_javascript_sdk_smoke(server: Server, keys: dict[str, str], tmp_path: Path) -> None:
    """E2B's JavaScript SDK from npm under Node: create, a command, write, read, list,
    get_info, kill. Node >= 20.18 comes from ``scripts/install --test`` (``.venv/node``: Node's
    build from the npm registry, as Debian 12 has Node 18); npm is Debian's."""
    installed = Path(sys.prefix) / "node" / "bin" / "node"
    node = str(installed) if installed.exists() else shutil.which("node")
    npm = shutil.which("npm")
    assert node and npm, "run scripts/install --test: this test needs .venv/node and npm"
    found = subprocess.run(
        [node, "-p", "process.versions.node"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tuple(map(int, found.split("."))) >= (20, 18), f"node {found} is older than 20.18"
    (tmp_path / "package.json").write_text('{"name": "e2b-smoke", "private": true}')
    shutil.copy(Path(__file__).with_name("e2b_js_smoke.mjs"), tmp_path / "smoke.mjs")
    try:
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--cache", str(tmp_path / ".npm"), JS_SDK],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=300,
        )
        run = subprocess.run(
            [node, "smoke.mjs"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "E2B_API_KEY": keys["a"]},
        )
    finally:
        for installed in ("node_modules", ".npm"):
            shutil.rmtree(tmp_path / installed, ignore_errors=True)
    assert run.returncode == 0 and run.stdout.strip() == "js sdk ok", run.stderr[-3000:]

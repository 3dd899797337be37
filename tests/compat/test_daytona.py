"""The unmodified ``daytona`` SDK from PyPI against a real `stockade serve` (``/daytona/api`` and
the toolbox), on the container tier (gVisor for one case): what a Daytona user does, and what
another tenant, a path walking out of the sandbox or a garbage body cannot do."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
from server_harness import Server, sqlite_server  # noqa: E402,F401

from daytona import (  # noqa: E402
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    FileDownloadRequest,
    FileUpload,
    Image,
    ListSandboxesQuery,
    PtySize,
    SessionExecuteRequest,
    VolumeMount,
)
from daytona.common.errors import (  # noqa: E402
    DaytonaAuthenticationError,
    DaytonaConflictError,
    DaytonaFileNotFoundError,
    DaytonaInvalidFilePathError,
    DaytonaTimeoutError,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(sqlite_server: Server) -> Server:  # noqa: F811
    return sqlite_server


def client(server: Server, key: str) -> Daytona:
    return Daytona(DaytonaConfig(api_key=key, api_url=f"{server.url}/daytona/api"))


@pytest.fixture(scope="module")
def acme(server: Server) -> Iterator[Daytona]:
    yield client(server, server.new_key("acme"))


@pytest.fixture(scope="module")
def sandbox(acme: Daytona) -> Iterator[Any]:
    """One started workspace of tenant acme, labelled, shared by the module's tests."""
    sb = acme.create(
        CreateSandboxFromSnapshotParams(
            name=f"box-{uuid.uuid4().hex[:6]}", labels={"team": "red"}, env_vars={"GREETING": "hello"}
        )
    )
    yield sb
    acme.delete(sb)


def test_environment_configuration_and_create(
    server: Server, monkeypatch: pytest.MonkeyPatch, sandbox: Any
) -> None:
    """DAYTONA_API_URL and DAYTONA_API_KEY alone point the SDK at Stockade."""
    key = server.new_key("acme")
    monkeypatch.setenv("DAYTONA_API_URL", f"{server.url}/daytona/api")
    monkeypatch.setenv("DAYTONA_API_KEY", key)
    d = Daytona()
    got = d.get(sandbox.id)
    assert got.state.value == "started" and got.labels["team"] == "red"
    assert got.toolbox_proxy_url == f"{server.url}/daytona/toolbox"
    assert got.env["GREETING"] == "hello" and got.organization_id == "acme"
    assert d.get(sandbox.name).id == sandbox.id  # by name too
    monkeypatch.setenv("DAYTONA_API_KEY", "sk_wrong_" + "x" * 40)
    with pytest.raises(DaytonaAuthenticationError):
        Daytona().get(sandbox.id)


def test_exec_and_code_run(sandbox: Any) -> None:
    r = sandbox.process.exec("echo out; echo err >&2; echo $GREETING $EXTRA; exit 3", env={"EXTRA": "there"})
    assert r.exit_code == 3 and r.result == "out\nerr\nhello there\n"
    assert sandbox.process.exec("pwd", cwd="/tmp").result == "/tmp\n"
    assert sandbox.process.exec("cat <<EOF\n$((6*7))\nEOF").result == "42\n"
    started = time.monotonic()
    with pytest.raises(DaytonaTimeoutError, match="timeout"):
        sandbox.process.exec("sleep 30", timeout=1)
    assert time.monotonic() - started < 15
    code = sandbox.process.code_run("import sys\nprint(sum(range(10)))\nsys.exit(1)")
    assert code.exit_code == 1 and code.result == "45\n"
    assert sandbox.get_user_home_dir() == "/home/user"


def test_files(sandbox: Any) -> None:
    sandbox.fs.upload_files(
        [
            FileUpload(source=b"alpha", destination="proj/a.txt"),
            FileUpload(source=os.urandom(3 << 20), destination="proj/big.bin"),
            FileUpload(source=b"gamma", destination="/tmp/c.txt"),
        ]
    )
    assert sandbox.fs.download_file("proj/a.txt") == b"alpha"
    assert len(sandbox.fs.download_file("proj/big.bin")) == 3 << 20
    names = {f.name: f for f in sandbox.fs.list_files("proj")}
    assert set(names) == {"a.txt", "big.bin"} and names["big.bin"].size == 3 << 20
    sandbox.fs.create_folder("proj/sub/deeper", "755")
    assert sandbox.fs.get_file_info("proj/sub/deeper").is_dir
    sandbox.fs.move_files("proj/a.txt", "proj/sub/moved.txt")
    results = sandbox.fs.download_files(
        [
            FileDownloadRequest(source="proj/sub/moved.txt"),
            FileDownloadRequest(source="/tmp/c.txt"),
            FileDownloadRequest(source="proj/missing.txt"),
        ]
    )
    assert [r.result for r in results[:2]] == [b"alpha", b"gamma"]
    assert results[2].result is None and results[2].error
    with pytest.raises(DaytonaFileNotFoundError):
        sandbox.fs.download_file("proj/a.txt")
    with pytest.raises(DaytonaError):  # a directory needs recursive=True
        sandbox.fs.delete_file("proj/sub")
    sandbox.fs.delete_file("proj/sub", recursive=True)
    with pytest.raises(DaytonaFileNotFoundError):
        sandbox.fs.get_file_info("proj/sub")


def test_sessions(sandbox: Any) -> None:
    sandbox.process.create_session("work")
    with pytest.raises(DaytonaConflictError):
        sandbox.process.create_session("work")
    sandbox.process.execute_session_command(
        "work",
        SessionExecuteRequest(
            command="mkdir -p /tmp/w && cd /tmp/w && export COUNT=7 && greet() { echo hi $1; }"
        ),
    )
    r = sandbox.process.execute_session_command(
        "work", SessionExecuteRequest(command="greet $COUNT; pwd; echo oops >&2; false")
    )
    assert (r.exit_code, r.stdout, r.stderr) == (1, "hi 7\n/tmp/w\n", "oops\n")
    run = sandbox.process.execute_session_command(
        "work", SessionExecuteRequest(command="sleep 1; echo late", run_async=True)
    )
    assert sandbox.process.get_session_command("work", run.cmd_id).exit_code is None
    deadline = time.monotonic() + 20
    while sandbox.process.get_session_command("work", run.cmd_id).exit_code is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert sandbox.process.get_session_command_logs("work", run.cmd_id).stdout == "late\n"
    session = sandbox.process.get_session("work")
    assert len(session.commands) == 3 and session.commands[1].exit_code == 1
    assert [s.session_id for s in sandbox.process.list_sessions()] == ["work"]
    sandbox.process.delete_session("work")
    with pytest.raises(DaytonaNotFoundError):
        sandbox.process.get_session("work")


def test_session_command_input(sandbox: Any) -> None:
    """send_session_command_input feeds a running command's stdin verbatim (no shell sees it);
    an ended command answers 410, an unknown one 404, and the session goes on."""
    proc = sandbox.process
    proc.create_session("typing")
    try:
        ask = proc.execute_session_command(
            "typing",
            SessionExecuteRequest(command='read a; read b; printf "%s|%s" "$a" "$b"', run_async=True),
        )
        proc.send_session_command_input("typing", ask.cmd_id, "first\n")
        proc.send_session_command_input("typing", ask.cmd_id, "$(touch ~/pwned); `id` \"q'\n")
        deadline = time.monotonic() + 20
        while proc.get_session_command("typing", ask.cmd_id).exit_code is None:
            assert time.monotonic() < deadline, "the command did not get its input"
            time.sleep(0.2)
        logs = proc.get_session_command_logs("typing", ask.cmd_id)
        assert logs.stdout == "first|$(touch ~/pwned); `id` \"q'"
        with pytest.raises(DaytonaError) as ended:
            proc.send_session_command_input("typing", ask.cmd_id, "late\n")
        assert ended.value.status_code == 410 and "ended" in str(ended.value)
        with pytest.raises(DaytonaNotFoundError):
            proc.send_session_command_input("typing", "abc123", "x")
        assert proc.exec("test -e ~/pwned || echo clean").result.strip() == "clean"
        r = proc.execute_session_command("typing", SessionExecuteRequest(command="echo still"))
        assert (r.exit_code, r.stdout) == (0, "still\n")
    finally:
        proc.delete_session("typing")


def test_labels_and_list(acme: Daytona, sandbox: Any) -> None:
    other = acme.create(CreateSandboxFromSnapshotParams(labels={"team": "blue"}))
    try:
        red = [s.id for s in acme.list(ListSandboxesQuery(labels={"team": "red"}))]
        assert red == [sandbox.id]
        everything = [s.id for s in acme.list(ListSandboxesQuery(limit=1))]  # one per page
        assert sorted(everything) == sorted([sandbox.id, other.id])
        assert other.name == other.id  # no name given: the id
    finally:
        acme.delete(other)
    with pytest.raises(DaytonaNotFoundError):
        acme.get(other.id)


def test_stop_start_keeps_files_and_archive(acme: Daytona) -> None:
    sb = acme.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    try:
        sb.fs.upload_file(b"kept", "notes/keep.txt")
        sb.stop()
        assert sb.state.value == "stopped"
        sb.start()
        assert sb.state.value == "started" and sb.fs.download_file("notes/keep.txt") == b"kept"
        sb.stop()
        sb.archive()
        sb.refresh_data()
        assert sb.state.value == "archived"
        sb.start()
        assert sb.process.exec("cat notes/keep.txt").result == "kept"
    finally:
        acme.delete(sb)


def test_volumes(acme: Daytona) -> None:
    name = f"vol-{uuid.uuid4().hex[:8]}"
    vol = acme.volume.get(name, create=True)
    assert vol.name == name and vol.state == "ready"
    assert acme.volume.get(name).id == vol.id and name in [v.name for v in acme.volume.list()]
    mount = [VolumeMount(volume_id=vol.id, mount_path="/data")]
    first = acme.create(CreateSandboxFromSnapshotParams(volumes=mount))
    try:
        first.fs.upload_file(b"shared", "/data/x.txt")
        with pytest.raises(DaytonaConflictError):  # in use
            acme.volume.delete(vol)
    finally:
        acme.delete(first)
    second = acme.create(CreateSandboxFromSnapshotParams(volumes=mount))
    try:
        assert second.fs.download_file("/data/x.txt") == b"shared"
    finally:
        acme.delete(second)
    acme.volume.delete(vol)
    with pytest.raises(DaytonaNotFoundError):
        acme.volume.get(name)


def test_gvisor_by_label(acme: Daytona) -> None:
    sb = acme.create(CreateSandboxFromSnapshotParams(labels={"stockade.isolation": "gvisor"}))
    try:
        assert sb.process.exec("echo in gvisor").result == "in gvisor\n"
        assert sb.process.code_run("print(2**10)").result == "1024\n"
        pty = sb.process.create_pty_session("g")
        pty.send_input("echo $((6*7)); exit 3\n")
        seen = bytearray()
        assert pty.wait(on_data=seen.extend, timeout=20).exit_code == 3 and b"42" in seen
    finally:
        acme.delete(sb)


# -- attacks -------------------------------------------------------------------------------------
def test_another_tenant_cannot_reach_the_sandbox(server: Server, sandbox: Any) -> None:
    sandbox.fs.upload_file(b"secret", "private.txt")
    intruder_key = server.new_key("intruder")
    intruder = client(server, intruder_key)
    with pytest.raises(DaytonaNotFoundError):
        intruder.get(sandbox.id)
    with pytest.raises(DaytonaNotFoundError):
        intruder.get(sandbox.name)
    assert sandbox.id not in [s.id for s in intruder.list()]
    api = f"{server.url}/daytona/api/sandbox/{sandbox.id}"
    toolbox = f"{server.url}/daytona/toolbox/{sandbox.id}"
    with httpx.Client(headers={"Authorization": f"Bearer {intruder_key}"}) as c:
        for method, url, kwargs in [
            ("POST", f"{api}/stop", {}),
            ("DELETE", api, {}),
            ("POST", f"{toolbox}/process/execute", {"json": {"command": "rm -rf ~"}}),
            ("POST", f"{toolbox}/files/bulk-download", {"json": {"paths": ["private.txt"]}}),
            ("GET", f"{toolbox}/files", {"params": {"path": "."}}),
            ("POST", f"{toolbox}/process/session", {"json": {"sessionId": "x"}}),
        ]:
            r = c.request(method, url, **kwargs)
            assert r.status_code == 404, (url, r.text)
            assert "secret" not in r.text
        r = c.post(
            f"{toolbox}/files/bulk-upload",
            files={"files[0].path": (None, "private.txt"), "files[0].file": ("p", b"pwned")},
        )
        assert r.status_code == 404
    with httpx.Client() as c:  # no key at all
        assert c.post(f"{toolbox}/process/execute", json={"command": "id"}).status_code == 401
    sandbox.process.create_session("mine")
    run = sandbox.process.execute_session_command(
        "mine", SessionExecuteRequest(command="echo private-output", run_async=True)
    )
    ws = toolbox.replace("http://", "ws://")
    for path in (
        "/process/pty/create-connect?id=evil",
        "/process/interpreter/execute",
        f"/process/session/mine/command/{run.cmd_id}/logs?follow=true",
    ):
        for headers in ({"Authorization": f"Bearer {intruder_key}"}, {}):
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                with websockets.sync.client.connect(ws + path, additional_headers=headers, open_timeout=10):
                    pass
            assert refused.value.response.status_code in (401, 403, 404), path
    assert sandbox.process.list_pty_sessions() == []
    sandbox.process.delete_session("mine")
    assert sandbox.fs.download_file("private.txt") == b"secret"
    assert sandbox.process.exec("echo alive").result == "alive\n"


def test_paths_cannot_leave_the_sandbox(sandbox: Any, tmp_path: Path) -> None:
    secret = Path("/var/tmp") / f"stockade-host-secret-{uuid.uuid4().hex}"
    secret.write_text("host only")
    try:
        for bad in ["../../../../../../" + str(secret), "proj/../../../etc/passwd"]:
            with pytest.raises(DaytonaInvalidFilePathError):
                sandbox.fs.download_file(bad)
            with pytest.raises(DaytonaError):
                sandbox.fs.upload_file(b"pwned", bad)
            with pytest.raises(DaytonaInvalidFilePathError):
                sandbox.fs.list_files(bad)
        # A symlink made inside the sandbox resolves inside it: the host file is not there.
        sandbox.process.exec(f"ln -sf {secret} link-out; ln -sf /proc/1/root/{secret} link2")
        for link in ("link-out", "link2"):
            result = sandbox.fs.download_files([FileDownloadRequest(source=link)])[0]
            assert result.result is None and result.error
        assert secret.read_text() == "host only"
    finally:
        secret.unlink()


def test_garbage_gets_clear_4xx_and_the_server_stays_up(server: Server, acme: Daytona, sandbox: Any) -> None:
    key = server.new_key("acme")
    toolbox = f"{server.url}/daytona/toolbox/{sandbox.id}"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as c:
        cases = [
            c.post("/daytona/api/sandbox", content=b"\x00{not json"),
            c.post("/daytona/api/sandbox", json={"cpu": "many", "labels": [1, 2]}),
            c.post("/daytona/api/sandbox", json={"snapshot": "no-such-template"}),
            c.post("/daytona/api/sandbox", json={"buildInfo": {"dockerfileContent": "FROM x"}}),
            c.post(
                "/daytona/api/sandbox",
                json={"buildInfo": {"dockerfileContent": "FROM base", "contextHashes": ["abc"]}},
            ),
            c.get("/daytona/api/sandbox", params={"labels": "{oops"}),
            c.post("/daytona/api/volumes", json={"name": "../../etc"}),
            c.post(f"{toolbox}/files/bulk-download", json={"paths": "not-a-list"}),
            c.post(
                f"{toolbox}/files/bulk-upload",
                content=b"--x\r\ngarbage",
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            ),
            c.post(f"{toolbox}/files/bulk-upload", json={"files": []}),
            c.post(f"{toolbox}/process/execute", json={"command": 42}),
            c.post(f"{toolbox}/process/session/a%20b/exec", json={"command": "id"}),
        ]
        truncated = (
            b'--b\r\nContent-Disposition: form-data; name="files[0].path"\r\n\r\n'
            b'cut.txt\r\n--b\r\nContent-Disposition: form-data; name="files[0].file";'
            b' filename="cut.txt"\r\n\r\n' + b"x" * 300000
        )  # no closing boundary
        cases.append(
            c.post(
                f"{toolbox}/files/bulk-upload",
                content=truncated,
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            )
        )
        for r in cases:
            assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
            body = r.json()
            assert isinstance(body["message"], str) and body["message"], body
        assert c.get("/health").status_code == 200
    with pytest.raises(DaytonaFileNotFoundError):  # the unfinished file never appeared
        sandbox.fs.get_file_info("cut.txt")
    assert sandbox.process.exec("echo still fine").result == "still fine\n"


def test_find_search_replace(sandbox: Any) -> None:
    sandbox.fs.upload_files(
        [
            FileUpload(source=b"one\nneedle here\nthree\n", destination="fsr/a.py"),
            FileUpload(source=b"no match\n", destination="fsr/sub/b.txt"),
        ]
    )
    matches = sandbox.fs.find_files("fsr", "needle")
    assert [(m.file, m.line, m.content) for m in matches] == [
        ("fsr/a.py", 2, "needle here")
    ]  # paths as walked from the one given
    assert sandbox.fs.search_files("fsr", "*.txt").files == ["fsr/sub/b.txt"]
    results = sandbox.fs.replace_in_files(["fsr/a.py", "fsr/missing"], "needle", "pin")
    assert [r.success for r in results] == [True, False]
    assert sandbox.fs.download_file("fsr/a.py") == b"one\npin here\nthree\n"


def test_toolbox_activity_restarts_the_auto_stop_clock(server: Server, acme: Daytona) -> None:
    sb = acme.create(CreateSandboxFromSnapshotParams(auto_stop_interval=5))
    try:
        assert sb.auto_stop_interval == 5
        with server.admin() as c:
            before = c.get(f"/sandboxes/{sb.id}").json()
            assert (before["on_timeout"], before["persistence"], before["idle_timeout"]) == (
                "stop",
                "workspace",
                True,
            )
            time.sleep(1.1)
            sb.process.exec("true")
            after = c.get(f"/sandboxes/{sb.id}").json()
            time.sleep(1.1)
            sb.refresh_activity()
            last = c.get(f"/sandboxes/{sb.id}").json()
        assert after["last_active_at"] - before["last_active_at"] >= 1
        assert last["last_active_at"] - after["last_active_at"] >= 1
        sb.refresh_data()
        assert sb.last_activity_at.startswith(time.strftime("%Y-%m-%dT", time.gmtime()))
    finally:
        acme.delete(sb)


def test_session_logs_follow(sandbox: Any) -> None:
    """The WebSocket log stream: output so far, then live, stdout and stderr told apart."""
    sandbox.process.create_session("follow")
    run = sandbox.process.execute_session_command(
        "follow",
        SessionExecuteRequest(
            command="echo first; sleep 1; echo warn >&2; sleep 1; echo last", run_async=True
        ),
    )
    out: list[str] = []
    err: list[str] = []
    asyncio.run(sandbox.process.get_session_command_logs_async("follow", run.cmd_id, out.append, err.append))
    assert "".join(out) == "first\nlast\n" and "".join(err) == "warn\n"
    assert sandbox.process.get_session_command("follow", run.cmd_id).exit_code == 0
    sandbox.process.delete_session("follow")


def test_async_client(server: Server) -> None:
    """``AsyncDaytona`` (aiohttp underneath) does the same."""
    from daytona import AsyncDaytona

    async def main() -> None:
        async with AsyncDaytona(
            DaytonaConfig(api_key=server.new_key("acme"), api_url=f"{server.url}/daytona/api")
        ) as d:
            sb = await d.create()
            try:
                assert (await sb.process.exec("echo async")).result == "async\n"
                await sb.fs.upload_file(b"a", "x/a.txt")
                assert await sb.fs.download_file("x/a.txt") == b"a"
                assert [f.name for f in await sb.fs.list_files("x")] == ["a.txt"]
            finally:
                await d.delete(sb)
            with pytest.raises(DaytonaNotFoundError):
                await d.get(sb.id)

    asyncio.run(main())


def test_pause_and_network_settings(acme: Daytona) -> None:
    sb = acme.create(CreateSandboxFromSnapshotParams(network_block_all=False))
    try:
        assert sb.network_block_all is False
        sb.process.exec("sleep 300 >/dev/null 2>&1 & echo $! > /tmp/pid")
        sb.pause()
        assert sb.state.value == "paused"
        sb.start()  # resumes: the process is still there
        assert sb.process.exec("kill -0 $(cat /tmp/pid) && echo alive").result == "alive\n"
        sb.update_network_settings(network_allow_list="192.0.2.0/24")
        sb.refresh_data()
        assert (sb.network_block_all, sb.network_allow_list) == (False, "192.0.2.0/24")
        sb.update_network_settings(network_block_all=True)
        sb.refresh_data()
        assert sb.network_block_all is True
    finally:
        acme.delete(sb)
    blocked = acme.create()
    try:
        assert blocked.network_block_all is True
        with pytest.raises(DaytonaConflictError, match="network"):
            blocked.update_network_settings(network_block_all=False)
    finally:
        acme.delete(blocked)


def test_labels_and_intervals_change_after_create(acme: Daytona) -> None:
    sb = acme.create(CreateSandboxFromSnapshotParams(name=f"lab-{uuid.uuid4().hex[:6]}", labels={"a": "1"}))
    try:
        assert sb.set_labels({"b": "2"}) == {"b": "2"}
        assert acme.get(sb.name).labels == {"b": "2"}  # replaced; the name survives
        assert [s.id for s in acme.list(ListSandboxesQuery(labels={"b": "2"}))] == [sb.id]
        sb.set_auto_delete_interval(30)
        sb.set_auto_archive_interval(60)
        sb.set_autostop_interval(0)
        sb.refresh_data()
        assert (sb.auto_delete_interval, sb.auto_archive_interval, sb.auto_stop_interval) == (30, 60, 0)
        sb.set_auto_delete_interval(-1)
        sb.refresh_data()
        assert sb.auto_delete_interval == -1
    finally:
        acme.delete(sb)


def test_pty(sandbox: Any) -> None:
    """A terminal: typed input, output, resize, re-attach after a detach, exit code."""
    pty = sandbox.process.create_pty_session(
        "term", envs={"PTYVAR": "set"}, pty_size=PtySize(rows=30, cols=100)
    )
    seen = bytearray()
    pty.send_input("stty size; echo var=$PTYVAR\n")
    deadline = time.monotonic() + 20
    while b"var=set" not in seen or b"30 100" not in seen:
        assert time.monotonic() < deadline, bytes(seen)
        pty.wait(on_data=seen.extend, timeout=1)
    info = pty.resize(PtySize(rows=40, cols=120))
    assert (info.rows, info.cols, info.active) == (40, 120, True)
    pty.disconnect()  # the shell goes on without a client
    assert [s.id for s in sandbox.process.list_pty_sessions()] == ["term"]
    again = sandbox.process.connect_pty_session("term")
    again.send_input("stty size; exit 7\n")
    result = again.wait(timeout=20)
    assert result.exit_code == 7
    assert sandbox.process.list_pty_sessions() == []


def test_code_interpreter(acme: Daytona) -> None:
    """Stateful Python (on the code-interpreter template's Jupyter kernel)."""
    sb = acme.create(CreateSandboxFromSnapshotParams(snapshot="code-interpreter"))
    try:
        ci = sb.code_interpreter
        assert ci.run_code("x = 41").error is None
        out: list[str] = []
        result = ci.run_code("print(x + 1)", on_stdout=lambda m: out.append(m.output))
        assert result.stdout == "42\n" and "".join(out) == "42\n"
        failed = ci.run_code("1 / 0")
        assert failed.error is not None and failed.error.name == "ZeroDivisionError"
        ctx = ci.create_context()
        assert ci.run_code("print('x' in globals())", context=ctx).stdout == "False\n"
        assert ctx.id in [c.id for c in ci.list_contexts()]
        with pytest.raises(DaytonaTimeoutError):
            ci.run_code("import time; time.sleep(30)", context=ctx, timeout=1)
        ci.delete_context(ctx)
        with pytest.raises(DaytonaError):
            ci.run_code("print(1)", context=ctx)
        assert ci.run_code("print(x)").stdout == "41\n"  # the default context lives on
    finally:
        acme.delete(sb)


def test_git(sandbox: Any) -> None:
    """init, clone, status, add, commit, branches, checkout, push and pull, on repositories
    inside the sandbox (no network here)."""
    git = sandbox.git
    git.init("/tmp/origin.git", bare=True, initial_branch="main")
    git.clone("file:///tmp/origin.git", "repo")
    sandbox.fs.upload_file(b"hello\n", "repo/a.txt")
    status = git.status("repo")
    assert [(f.name, f.worktree.value) for f in status.file_status] == [("a.txt", "Untracked")]
    git.add("repo", ["a.txt"])
    assert git.status("repo").file_status[0].staging.value == "Added"
    first = git.commit("repo", "first; with 'quotes' and $(no expansion)", "Ada", "ada@example.org")
    assert len(first.sha) == 40
    log = sandbox.process.exec("git -C repo log -1 --format='%an <%ae> %s'").result
    assert log == "Ada <ada@example.org> first; with 'quotes' and $(no expansion)\n"
    git.push("repo", branch="main", set_upstream=True)
    git.create_branch("repo", "feature")
    assert set(git.branches("repo").branches) == {"main", "feature"}
    git.checkout_branch("repo", "feature")
    assert git.status("repo").current_branch == "feature"
    git.clone("file:///tmp/origin.git", "other")
    sandbox.fs.upload_file(b"more\n", "other/b.txt")
    git.add("other", ["."])
    git.commit("other", "second", "Bob", "bob@example.org")
    git.push("other")
    git.checkout_branch("repo", "main")
    git.pull("repo")
    assert sandbox.fs.download_file("repo/b.txt") == b"more\n"
    git.delete_branch("repo", "feature")
    assert git.branches("repo").branches == ["main"]
    with pytest.raises(DaytonaError, match="git clone failed"):
        git.clone("file:///tmp/no-such.git", "nothing")


def test_git_config_remotes_reset_restore(sandbox: Any) -> None:
    """configure_user then commit with no author, config get/set, remotes, reset, restore."""
    git = sandbox.git
    git.init("cfg")
    git.configure_user("Cy", "cy@example.org")
    assert git.get_config("user.name") == "Cy" and git.get_config("no.such") is None
    git.set_config("core.note", "local $(x)", scope="local", path="cfg")
    assert git.get_config("core.note", scope="local", path="cfg") == "local $(x)"
    sandbox.fs.upload_file(b"v1\n", "cfg/f.txt")
    git.add("cfg", ["f.txt"])
    assert sandbox.process.exec("cd cfg && git commit -qm one && git log --format=%an").result == "Cy\n"
    git.remote_add("cfg", "origin", "file:///tmp/origin.git")
    git.remote_add("cfg", "origin", "file:///tmp/elsewhere.git", overwrite=True)
    assert git.remote_get("cfg", "origin") == "file:///tmp/elsewhere.git"
    sandbox.fs.upload_file(b"v2\n", "cfg/f.txt")
    git.add("cfg", ["f.txt"])
    git.reset("cfg", files=["f.txt"])  # unstaged again, worktree kept
    assert git.status("cfg").file_status[0].staging.value == "Unmodified"
    git.restore("cfg", ["f.txt"], worktree=True)
    assert sandbox.fs.download_file("cfg/f.txt") == b"v1\n"
    with pytest.raises(DaytonaError, match="git reset failed"):
        git.reset("cfg", mode="hard", target="no-such-rev")


def test_create_from_image(server: Server, acme: Daytona) -> None:
    """A declarative image on a Stockade template is built (once) and the sandbox made from it."""
    marker = uuid.uuid4().hex  # a new image each run: nothing is reused from an earlier one
    image = Image.base("base").run_commands(f"echo {marker} > /opt/marker").env({"IMG": "yes"})
    sb = acme.create(CreateSandboxFromImageParams(image=image), timeout=120)
    try:
        assert sb.process.exec("cat /opt/marker; echo $IMG").result == f"{marker}\nyes\n"
        again = acme.create(CreateSandboxFromImageParams(image=image))  # the template is reused
        assert again.snapshot == sb.snapshot and acme.snapshot.get(sb.snapshot).name
        acme.delete(again)
    finally:
        acme.delete(sb)
        # The image store is shared by every test server: leave neither the template nor its
        # build-cache layers behind.
        with server.client(server.new_key("acme")) as c:
            assert c.delete(f"/templates/{sb.snapshot}").status_code == 204
            assert c.post("/templates/prune").status_code == 200
    with pytest.raises(DaytonaError, match="cannot build"):
        acme.create(CreateSandboxFromImageParams(image="python:3.12-slim"))


def test_metrics_ports_previews_and_env(server: Server, sandbox: Any) -> None:
    """``get_metrics_latest``, the toolbox's port listing (which the SDK does not wrap),
    preview links to a port, and ``update_env``."""
    pid = sandbox.process.exec(
        "python3 -m http.server 8123 --bind 127.0.0.1 >/dev/null 2>&1 & echo $!"
    ).result.strip()
    toolbox = f"{server.url}/daytona/toolbox/{sandbox.id}"
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {server.new_key('acme')}"}) as c:
            deadline = time.monotonic() + 15
            while 8123 not in c.get(f"{toolbox}/port").json()["ports"]:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert c.get(f"{toolbox}/port/8123/in-use").json() == {"isInUse": True}
            assert c.get(f"{toolbox}/port/8124/in-use").json() == {"isInUse": False}
            preview = sandbox.get_preview_link(8123)  # through Stockade's port proxy
            listing = httpx.get(preview.url + "/", headers={"Authorization": f"Bearer {preview.token}"})
            assert listing.status_code == 200 and "Directory listing" in listing.text
            assert httpx.get(preview.url + "/").status_code == 401
            signed = sandbox.create_signed_preview_url(8123, expires_in_seconds=60)
            assert httpx.get(signed.url).status_code == 200  # no header needed
        metrics = sandbox.get_metrics_latest()
        assert metrics.cpu_count >= 1 and 0 < metrics.mem_used < metrics.mem_total
        assert 0 < metrics.disk_used < metrics.disk_total
    finally:
        sandbox.process.exec(f"kill {pid}")
    sandbox.update_env({"NEWVAR": "v"}, unset=["GREETING"])
    assert sandbox.process.exec("echo $NEWVAR-${GREETING:-unset}").result == "v-unset\n"
    sandbox.update_env({"GREETING": "hello"}, unset=["NEWVAR"])


def test_signed_file_urls_work_without_a_token_until_expired_altered_or_rotated(
    server: Server, sandbox: Any
) -> None:
    """download_url()/upload_url() need no header; a URL for another path, another method,
    another sandbox, past its expiry, with a made-up signature or from before a key rotation
    gets 401 and changes nothing; another tenant cannot read the key."""
    from daytona._utils.file_url_signing import compute_file_url_signature

    sandbox.fs.upload_file(b"signed bytes", "signed/s.txt")
    url = sandbox.download_url("signed/s.txt", ttl_seconds=60)
    forever = sandbox.download_url("signed/s.txt", ttl_seconds=0)
    upload = sandbox.upload_url("signed/up.txt")
    assert "Authorization" not in url and "expires=0" in forever
    with httpx.Client(timeout=30) as c:
        assert c.get(url).content == b"signed bytes"
        assert c.get(forever).content == b"signed bytes"
        assert c.post(upload, files={"file": ("up.txt", b"uploaded")}).status_code == 200
        assert sandbox.fs.download_file("signed/up.txt") == b"uploaded"

        key = sandbox._ensure_signing_key()
        toolbox = f"{server.url}/daytona/toolbox/{sandbox.id}/files"
        past = int(time.time()) - 5
        expired = {
            "path": "signed/s.txt",
            "expires": past,
            "signature": compute_file_url_signature(key, "GET", "signed/s.txt", past),
        }
        for attempt, request in [
            ("other path", ("GET", url.replace("signed%2Fs.txt", "signed%2Fup.txt"))),
            ("other method", ("POST", url.replace("/files/download", "/files/upload-v2"))),
            ("other sandbox", ("GET", url.replace(sandbox.id, "sb" + "0" * 18))),
            ("forged", ("GET", url.split("&signature=")[0] + "&signature=v1_AAAA")),
        ]:
            method, target = request
            r = c.request(method, target, files={"file": ("x", b"overwrite")} if method == "POST" else None)
            assert r.status_code in (401, 404), (attempt, r.status_code, r.text)
            assert b"overwrite" not in r.content and b"signed bytes" not in r.content, attempt
        r = c.get(f"{toolbox}/download", params=expired)
        assert r.status_code == 401 and "expired" in r.json()["message"]
        r = c.get(
            f"{toolbox}/download", params={"path": "signed/s.txt", "expires": "soon", "signature": "v1_x"}
        )
        assert r.status_code == 400
        assert sandbox.fs.download_file("signed/up.txt") == b"uploaded"  # nothing was overwritten

        sandbox.rotate_signing_key()
        for old in (url, forever):
            r = c.get(old)
            assert r.status_code == 401 and "rotated" in r.json()["message"]
        assert c.get(sandbox.download_url("signed/s.txt")).content == b"signed bytes"

    intruder_key = server.new_key("intruder-urls")
    with httpx.Client(headers={"Authorization": f"Bearer {intruder_key}"}, timeout=30) as c:
        for method, path in [("GET", "signing-key"), ("POST", "signing-key/rotate")]:
            r = c.request(method, f"{server.url}/daytona/api/sandbox/{sandbox.id}/{path}")
            assert r.status_code == 404, (path, r.status_code)
    assert httpx.get(sandbox.download_url("signed/s.txt")).content == b"signed bytes"  # not rotated by them

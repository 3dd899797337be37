"""The unmodified ``daytona`` SDK (0.226.1, sync and async) against a real `stockade serve`:
snapshots as Stockade templates (create from an image or a template name, from a sandbox,
activate, delete, tenancy), sessions that survive a server restart, and every SDK call Stockade
does not serve failing with a clear Daytona error that names the feature, never a 500."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
from server_harness import Server, sqlite_server  # noqa: E402,F401

from daytona import (  # noqa: E402
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    Image,
    Resources,
    SessionExecuteRequest,
)
from daytona.common.errors import (  # noqa: E402
    DaytonaBadRequestError,
    DaytonaConflictError,
    DaytonaFileNotFoundError,
    DaytonaForbiddenError,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(sqlite_server: Server) -> Server:  # noqa: F811
    return sqlite_server


def config(server: Server, key: str) -> DaytonaConfig:
    return DaytonaConfig(api_key=key, api_url=f"{server.url}/daytona/api")


@pytest.fixture(scope="module")
def acme(server: Server) -> Daytona:
    return Daytona(config(server, server.new_key("acme")))


@pytest.fixture(scope="module")
def sandbox(acme: Daytona) -> Iterator[Any]:
    sb = acme.create(CreateSandboxFromSnapshotParams())
    yield sb
    acme.delete(sb)


def _cleanup(server: Server) -> None:
    """The image store is shared by every test server: leave no build-cache layers behind."""
    with server.client(server.new_key("acme")) as c:
        assert c.post("/templates/prune").status_code == 200


def test_snapshot_create_use_activate_delete(server: Server, acme: Daytona) -> None:
    """``snapshot.create`` from an ``Image`` builds a template of the tenant; sandboxes start
    from it; another tenant neither sees nor deletes it; delete waits for its last user."""
    name, marker = f"snap-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    logs: list[str] = []
    image = Image.base("base").run_commands(f"echo {marker} > /opt/marker")
    snap = acme.snapshot.create(CreateSnapshotParams(name=name, image=image), on_logs=logs.append)
    try:
        assert snap.name == name and snap.state.value == "active"
        assert logs and logs[-1].startswith(f"Created snapshot {name} ")
        assert acme.snapshot.get(name).id == name
        assert name in [s.name for s in acme.snapshot.list().items]
        assert acme.snapshot.activate(snap).state.value == "active"
        sb = acme.create(CreateSandboxFromSnapshotParams(snapshot=name))
        try:
            assert sb.process.exec("cat /opt/marker").result == f"{marker}\n"
            with pytest.raises(DaytonaConflictError):
                acme.snapshot.delete(snap)  # a sandbox is made from it
        finally:
            acme.delete(sb)
        with pytest.raises(DaytonaConflictError):  # names are unique
            acme.snapshot.create(CreateSnapshotParams(name=name, image="base"))
        other = Daytona(config(server, server.new_key("globex")))
        with pytest.raises(DaytonaNotFoundError):
            other.snapshot.get(name)
        with pytest.raises(DaytonaNotFoundError):
            other.snapshot.delete(snap)
        with pytest.raises(DaytonaBadRequestError, match="no template"):
            other.create(CreateSandboxFromSnapshotParams(snapshot=name))
        with pytest.raises(DaytonaForbiddenError, match="operator"):
            acme.snapshot.delete(acme.snapshot.get("base"))  # shared: not the tenant's
    finally:
        acme.snapshot.delete(snap)
        _cleanup(server)
    with pytest.raises(DaytonaNotFoundError):
        acme.snapshot.get(name)
    assert acme.snapshot.get("base").state.value == "active"  # the shared one is untouched


def test_snapshot_create_refusals(acme: Daytona) -> None:
    """What a template cannot be gets a 400 that says why, and nothing is left behind."""
    name = f"bad-{uuid.uuid4().hex[:8]}"
    with pytest.raises(DaytonaBadRequestError, match="cannot build"):
        acme.snapshot.create(CreateSnapshotParams(name=name, image="python:3.12-slim"))
    with pytest.raises(DaytonaBadRequestError, match="resources"):
        acme.snapshot.create(CreateSnapshotParams(name=name, image="base", resources=Resources(cpu=2)))
    with pytest.raises(DaytonaBadRequestError, match="invalid request"):
        acme.snapshot.create(CreateSnapshotParams(name="x" * 200, image="base"))
    assert name not in [s.name for s in acme.snapshot.list().items]


def test_sandbox_create_snapshot(server: Server, acme: Daytona, sandbox: Any) -> None:
    """``sandbox.create_snapshot(name)`` keeps the sandbox's files as a snapshot; the sandbox
    carries on, and a new sandbox starts from those files."""
    name = f"from-sb-{uuid.uuid4().hex[:8]}"
    sandbox.fs.upload_file(b"kept", "work/kept.txt")
    sandbox.create_snapshot(name)
    try:
        assert sandbox.state.value == "started"
        assert sandbox.process.exec("echo alive").result == "alive\n"
        sb = acme.create(CreateSandboxFromSnapshotParams(snapshot=name))
        try:
            assert sb.fs.download_file("work/kept.txt") == b"kept"
        finally:
            acme.delete(sb)
    finally:
        acme.snapshot.delete(name)
        _cleanup(server)


#: SDK calls Stockade does not serve, with a word the error must name.
UNSUPPORTED: list[tuple[str, Callable[[Any], Any], str]] = [
    ("recover", lambda sb: sb.recover(), "nothing to recover"),
    ("set_public", lambda sb: sb.set_public(True), "public"),
    ("create_ssh_access", lambda sb: sb.create_ssh_access(60), "SSH"),
    ("update_secrets", lambda sb: sb.update_secrets({"A": "b"}), "secrets"),
    ("expire_signed_preview_url", lambda sb: sb.expire_signed_preview_url(8000, "tok"), "revoked"),
    ("get_metrics", lambda sb: sb.get_metrics(), "telemetry"),
    (
        "lsp typescript",
        lambda sb: sb.create_lsp_server("typescript", ".").start(),
        "typescript-language-server is not installed",
    ),
    ("git reset", lambda sb: sb.git.reset("work"), "git"),
    ("computer use", lambda sb: sb.computer_use.start(), "desktop"),
]


@pytest.mark.parametrize("what,call,word", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_calls_fail_clearly(
    sandbox: Any, what: str, call: Callable[[Any], Any], word: str
) -> None:
    with pytest.raises(DaytonaError) as caught:
        call(sandbox)
    assert word in str(caught.value), str(caught.value)
    assert caught.value.status_code in (400, 501), (what, caught.value)


def test_unsupported_routes_check_keys_and_owners(server: Server, sandbox: Any) -> None:
    """The catch-all answers in Daytona's shape after the same checks as served routes: no key
    401, another tenant's sandbox 404, an unknown path 404; never a 500."""
    api, toolbox = f"{server.url}/daytona/api", f"{server.url}/daytona/toolbox/{sandbox.id}"
    acme = {"Authorization": f"Bearer {server.new_key('acme')}"}
    globex = {"Authorization": f"Bearer {server.new_key('globex')}"}
    with httpx.Client() as c:
        r = c.post(f"{api}/sandbox/{sandbox.id}/ssh-access", headers=acme)
        assert r.status_code == 501 and r.json()["statusCode"] == 501
        assert "SSH" in r.json()["message"] and r.json()["path"].endswith("/ssh-access")
        assert c.post(f"{api}/sandbox/{sandbox.id}/ssh-access").status_code == 401
        assert c.post(f"{toolbox}/computeruse/start", json={}, headers=globex).status_code == 404
        assert c.post(f"{toolbox}/computeruse/start", json={}, headers=acme).status_code == 501
        r = c.get(f"{api}/no/such/thing", headers=acme)
        assert r.status_code == 404 and "no such Daytona API call" in r.json()["message"]
        r = c.patch(f"{api}/sandbox/{sandbox.id}/start", headers=acme)  # served path, odd verb
        assert r.status_code == 404 and r.json()["statusCode"] == 404
        assert c.post(f"{api}/sandbox/{sandbox.id}/public/false", headers=acme).json()["public"] is False
        assert c.post(f"{api}/sandbox/{sandbox.id}/public/maybe", headers=acme).status_code == 400


def test_async_client_snapshots_and_unsupported(server: Server) -> None:
    """``AsyncDaytona`` gets the same snapshots and the same clear refusals."""

    async def main() -> None:
        async with AsyncDaytona(config(server, server.new_key("acme"))) as d:
            name = f"async-{uuid.uuid4().hex[:8]}"
            snap = await d.snapshot.create(CreateSnapshotParams(name=name, image="base"))
            try:
                assert snap.state.value == "active"
                assert (await d.snapshot.activate(name)).name == name
                sb = await d.create(CreateSandboxFromSnapshotParams(snapshot=name))
                try:
                    assert (await sb.process.exec("echo ok")).result == "ok\n"
                    with pytest.raises(DaytonaError, match="SSH"):
                        await sb.create_ssh_access(60)
                    with pytest.raises(DaytonaError, match="typescript-language-server is not"):
                        await sb.create_lsp_server("typescript", ".").start()
                finally:
                    await d.delete(sb)
            finally:
                await d.snapshot.delete(snap)
            with pytest.raises(DaytonaNotFoundError):
                await d.snapshot.get(name)

    asyncio.run(main())
    _cleanup(server)


def test_sessions_survive_a_server_restart(server: Server, sandbox: Any) -> None:
    """A session lives in the sandbox, not in the server: after a restart its shell state,
    its finished commands and a command still running are all there."""
    process = sandbox.process
    process.create_session("kept")
    process.execute_session_command("kept", SessionExecuteRequest(command="export KEPT=yes; cd /tmp"))
    running = process.execute_session_command(
        "kept", SessionExecuteRequest(command="sleep 3; echo done", run_async=True)
    )
    server.stop()
    server.start()
    session = process.get_session("kept")
    assert [c.command for c in session.commands] == ["export KEPT=yes; cd /tmp", "sleep 3; echo done"]
    r = process.execute_session_command("kept", SessionExecuteRequest(command="echo $KEPT $PWD"))
    assert (r.exit_code, r.stdout) == (0, "yes /tmp\n")  # waited for the sleep before it
    assert process.get_session_command("kept", running.cmd_id).exit_code == 0
    assert process.get_session_command_logs("kept", running.cmd_id).stdout == "done\n"
    process.delete_session("kept")
    with pytest.raises(DaytonaNotFoundError):
        process.get_session("kept")


def test_file_streams_and_permissions(sandbox: Any) -> None:
    """``upload_file_stream`` and ``download_file_stream`` move a file in pieces;
    ``set_file_permissions`` and a folder's mode change what the sandbox sees."""
    import io

    data = bytes(range(256)) * 8192  # 2 MiB
    sandbox.fs.upload_file_stream(io.BytesIO(data), "streams/big.bin")
    got = b"".join(sandbox.fs.download_file_stream("streams/big.bin"))
    assert got == data
    with pytest.raises(DaytonaNotFoundError):
        b"".join(sandbox.fs.download_file_stream("streams/missing.bin"))
    sandbox.fs.set_file_permissions("streams/big.bin", mode="640", owner="root", group="root")
    info = sandbox.fs.get_file_info("streams/big.bin")
    assert (info.permissions, info.owner, info.group) == ("0640", "root", "root")
    assert sandbox.process.exec("cat streams/big.bin >/dev/null").exit_code != 0  # not ours
    sandbox.fs.create_folder("streams/private", "700")
    assert sandbox.fs.get_file_info("streams/private").permissions == "0700"
    with pytest.raises(DaytonaFileNotFoundError):
        sandbox.fs.set_file_permissions("streams/none", mode="600")
    with pytest.raises(DaytonaBadRequestError):
        sandbox.fs.set_file_permissions("streams/big.bin", owner="bad;name")


def test_pty_by_id_and_small_calls(sandbox: Any) -> None:
    """PTY info, resize and kill by id; the work dir and an activity refresh."""
    from daytona import PtySize

    pty = sandbox.process.create_pty_session("byid", pty_size=PtySize(rows=24, cols=80))
    try:
        info = sandbox.process.get_pty_session_info("byid")
        assert (info.id, info.rows, info.cols) == ("byid", 24, 80)
        resized = sandbox.process.resize_pty_session("byid", PtySize(rows=50, cols=132))
        assert (resized.rows, resized.cols) == (50, 132)
        sandbox.process.kill_pty_session("byid")
        assert pty.wait(timeout=20).exit_code != 0
        with pytest.raises(DaytonaNotFoundError):
            sandbox.process.get_pty_session_info("byid")
    finally:
        pty.disconnect()
    assert sandbox.get_work_dir() == "/home/user"
    sandbox.refresh_activity()

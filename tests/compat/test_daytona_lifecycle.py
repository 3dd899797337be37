"""The unmodified ``daytona`` SDK on what the engine added: fork, secrets at egress, auto-stop
and auto-pause on real inactivity, and why a sandbox failed (``errorReason``, state ``error``)."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
from server_harness import Server, sqlite_server  # noqa: E402,F401

from stockade import host  # noqa: E402

from daytona import (  # noqa: E402
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
)
from daytona.common.errors import DaytonaConflictError  # noqa: E402
from daytona.common.secret import CreateSecretParams, UpdateSecretParams  # noqa: E402
from daytona_api_client.exceptions import ApiException  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]
MEMORY_BOMB = "python3 -c 'b = []\nwhile True: b.append(bytearray(8 << 20))'"


@pytest.fixture(scope="module")
def server(sqlite_server: Server) -> Server:  # noqa: F811
    return sqlite_server


@pytest.fixture(scope="module")
def acme_key(server: Server) -> str:
    return server.new_key("acme")


@pytest.fixture(scope="module")
def acme(server: Server, acme_key: str) -> Iterator[Daytona]:
    yield Daytona(DaytonaConfig(api_key=acme_key, api_url=f"{server.url}/daytona/api"))


def _wait(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"not within {within} s: {what}")


def test_fork_copies_the_files_into_a_named_sandbox_of_its_own(server: Server, acme: Daytona) -> None:
    source = acme.create(CreateSandboxFromSnapshotParams(labels={"team": "fork"}))
    copy = None
    try:
        source.fs.upload_file(b"before the fork", "work/kept.txt")
        name = f"copy-{uuid.uuid4().hex[:6]}"
        copy = source.fork(name=name)
        assert copy.id != source.id and copy.name == name and copy.state.value == "started"
        assert copy.labels == source.labels and copy.labels["team"] == "fork"
        assert copy.fs.download_file("work/kept.txt") == b"before the fork"
        copy.fs.upload_file(b"copy only", "work/kept.txt")
        source.fs.upload_file(b"source only", "work/new.txt")
        assert source.fs.download_file("work/kept.txt") == b"before the fork"
        assert copy.process.exec("ls work").result.split() == ["kept.txt"]
        assert acme.get(name).id == copy.id
        with pytest.raises(DaytonaConflictError, match="already exists"):
            source.fork(name=name)
        with server.client(server.new_key("other")) as c:  # another tenant cannot fork it
            r = c.post(f"/daytona/api/sandbox/{source.id}/fork", json={"name": "stolen"})
            assert r.status_code == 404 and r.json()["statusCode"] == 404
        plain = source.fork()  # no name: its id, as for a create
        try:
            assert plain.name == plain.id
        finally:
            acme.delete(plain)
    finally:
        acme.delete(source)
        if copy is not None:
            acme.delete(copy)


def test_secrets_are_write_only_and_the_sandbox_sees_a_placeholder(
    server: Server, acme: Daytona, acme_key: str
) -> None:
    value = "sk-daytona-" + uuid.uuid4().hex
    name = f"api-key-{uuid.uuid4().hex[:6]}"
    secret = acme.secret.create(CreateSecretParams(name=name, value=value, hosts=["api.example.test"]))
    sb = None
    try:
        assert (secret.id, secret.name, secret.hosts) == (name, name, ["api.example.test"])
        # The SDK's secret service raises its API client's exceptions as they come.
        with pytest.raises(ApiException) as taken:
            acme.secret.create(CreateSecretParams(name=name, value="x", hosts=["a.test"]))
        assert taken.value.status == 409
        with pytest.raises(ApiException, match="hosts") as open_ended:
            acme.secret.create(CreateSecretParams(name=name + "-open", value="x"))
        assert open_ended.value.status == 400
        updated = acme.secret.update(
            name, UpdateSecretParams(hosts=["api.example.test", "*.example.test"], description="for the test")
        )
        assert updated.hosts == ["api.example.test", "*.example.test"]
        page = acme.secret.list(limit=1)
        assert page.total >= 1 and name in [s.name for s in acme.secret.list().items]
        with server.client(acme_key) as c:  # no answer carries the value
            for path in (
                "/daytona/api/secret",
                f"/daytona/api/secret/{name}",
                "/daytona/api/secret/paginated",
            ):
                r = c.get(path)
                assert r.status_code == 200 and value not in r.text, path
        other = Daytona(DaytonaConfig(api_key=server.new_key("other"), api_url=f"{server.url}/daytona/api"))
        with pytest.raises(ApiException) as missing:
            other.secret.get(name)
        assert missing.value.status == 404
        assert name not in [s.name for s in other.secret.list().items]
        for attempt in (
            lambda: other.secret.update(name, UpdateSecretParams(hosts=["x.test"])),
            lambda: other.secret.delete(name),
        ):
            with pytest.raises(ApiException) as refused:
                attempt()
            assert refused.value.status == 404
        assert acme.secret.get(name).hosts == ["api.example.test", "*.example.test"]

        with pytest.raises(DaytonaError, match="network"):  # secrets need egress to their hosts
            acme.create(CreateSandboxFromSnapshotParams(secrets={"API_KEY": name}))
        sb = acme.create(
            CreateSandboxFromSnapshotParams(
                secrets={"API_KEY": name}, domain_allow_list="api.example.test,*.example.test"
            )
        )
        seen = sb.process.exec('printf %s "$API_KEY"').result
        assert seen.startswith("STOCKADE_SECRET_") and value not in seen
        assert (
            sb.process.exec(f"env; cat /proc/1/environ; grep -rs {value} /etc /home /tmp; true").result.find(
                value
            )
            == -1
        )
        with pytest.raises(DaytonaError, match="501|secrets"):
            sb.update_secrets({"API_KEY": name})
    finally:
        if sb is not None:
            acme.delete(sb)
        acme.secret.delete(name)
    with pytest.raises(ApiException) as gone:
        acme.secret.get(name)
    assert gone.value.status == 404


def test_auto_stop_acts_on_inactivity_and_a_running_command_keeps_it_started(
    server: Server, acme: Daytona
) -> None:
    sb = acme.create(CreateSandboxFromSnapshotParams(auto_stop_interval=1))
    try:
        sb.process.create_session("idle-shell")  # a waiting shell does not keep it awake
        with server.admin() as c:  # 1 minute is long for a test: 4 s of inactivity instead
            assert c.post(f"/sandboxes/{sb.id}/timeout", json={"timeout": 4}).status_code == 200
        ran: list[Any] = []
        worker = threading.Thread(target=lambda: ran.append(sb.process.exec("sleep 9")))
        started = time.monotonic()
        worker.start()
        time.sleep(7)
        assert acme.get(sb.id).state.value == "started"  # the command runs: not idle
        worker.join()
        assert ran and ran[0].exit_code == 0
        stopped = _wait(lambda: acme.get(sb.id).state.value == "stopped", 20, "the idle sandbox stops")
        assert stopped and time.monotonic() - started > 9
        sb.start()
        assert sb.process.exec("echo back").result == "back\n"
        sb.set_auto_delete_interval(0)  # deleted as soon as it stops
        sb.stop()
        _wait(lambda: _missing(acme, sb.id), 15, "the stopped sandbox is deleted")
    finally:
        if not _missing(acme, sb.id):
            acme.delete(sb)


def _missing(acme: Daytona, sandbox_id: str) -> bool:
    try:
        acme.get(sandbox_id)
        return False
    except DaytonaNotFoundError:
        return True


def test_auto_pause_at_create_and_its_setter(acme: Daytona) -> None:
    sb = acme.create(CreateSandboxFromSnapshotParams(auto_pause_interval=30))
    try:
        assert (sb.auto_pause_interval, sb.auto_stop_interval) == (30, 0)
        assert sb.auto_archive_interval == 7 * 24 * 60  # Daytona's default
        sb.set_auto_pause_interval(45)
        sb.refresh_data()
        assert sb.auto_pause_interval == 45
        with pytest.raises(DaytonaConflictError, match="pause when idle"):
            sb.set_autostop_interval(10)
        with pytest.raises(DaytonaError, match="exclusive"):
            acme.create(CreateSandboxFromSnapshotParams(auto_pause_interval=5, auto_stop_interval=5))
    finally:
        acme.delete(sb)


def _native_sandbox(server: Server, key: str, **spec: Any) -> str:
    with server.client(key) as c:
        r = c.post("/sandboxes", json={"memory_mb": 128, **spec})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_out_of_memory_is_the_error_reason(server: Server, acme: Daytona, acme_key: str) -> None:
    """Container: the process dies, the sandbox stays started and says why; gVisor: the whole
    sandbox ends and reads as state ``error`` with the reason while its end record is kept."""
    box = acme.get(_native_sandbox(server, acme_key))
    try:
        box.process.exec(MEMORY_BOMB, timeout=60)
        got = _wait(lambda: (s := acme.get(box.id)).error_reason and s, 20, "the OOM noted")
        assert (got.state.value, got.error_reason) == ("started", "out of memory (python3)")
        assert box.process.exec("echo still-here").result == "still-here\n"
    finally:
        acme.delete(box)
    gvisor = acme.get(_native_sandbox(server, acme_key, isolation="gvisor"))
    with pytest.raises(DaytonaError):
        gvisor.process.exec(MEMORY_BOMB, timeout=60)
    ended = _wait(
        lambda: (s := acme.get(gvisor.id)).state.value == "error" and s, 20, "the gVisor sandbox ends"
    )
    # gVisor names the command the agent started (Daytona's shell), not the process inside.
    assert ended.error_reason in ("out of memory (sh)", "out of memory (bash)")
    assert ended.desired_state.value == "destroyed"
    acme.delete(gvisor)  # nothing left to delete: answered, not an error
    with pytest.raises(DaytonaNotFoundError):  # another tenant still reads nothing
        Daytona(DaytonaConfig(api_key=server.new_key("other"), api_url=f"{server.url}/daytona/api")).get(
            gvisor.id
        )


def test_ttl_deletes_a_sandbox_whatever_its_state(server: Server, acme: Daytona, acme_key: str) -> None:
    """``ttl_minutes`` and ``set_ttl`` set a deletion time counted from now (0: none), which the
    engine keeps even while the sandbox is stopped; when it passes, the sandbox is gone and its
    end record says why. (The engine's TTL is in seconds; Daytona's in minutes.)"""
    sb = acme.create(CreateSandboxFromSnapshotParams(ttl_minutes=30))
    try:
        with server.client(acme_key) as c:

            def delete_at() -> Any:
                return c.get(f"/sandboxes/{sb.id}").json()["delete_at"]

            assert abs(delete_at() - (time.time() + 1800)) < 30
            sb.set_ttl(0)
            assert delete_at() is None
            sb.set_ttl(90)
            assert abs(delete_at() - (time.time() + 5400)) < 30
            r = c.post(f"/daytona/api/sandbox/{sb.id}/ttl/-1")
            assert r.status_code == 400 and "ttl" in r.json()["message"]
            with server.client(server.new_key("other-ttl")) as other:
                assert other.post(f"/daytona/api/sandbox/{sb.id}/ttl/0").status_code == 404
            assert delete_at() is not None  # the other tenant changed nothing
    finally:
        acme.delete(sb)
    # The engine's side, in seconds: a stopped workspace is deleted when its ttl passes.
    with server.client(acme_key) as c:
        r = c.post("/sandboxes", json={"memory_mb": 128, "persistence": "workspace", "ttl": 4})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["id"]
        assert c.post(f"/sandboxes/{sandbox_id}/stop").status_code == 200
        _wait(lambda: c.get(f"/sandboxes/{sandbox_id}").status_code == 404, 30, "the ttl deletes it")
        end = c.get(f"/sandboxes/{sandbox_id}/end").json()
        assert (end["reason"], end["message"]) == ("timeout", "its ttl passed")
        r = c.post("/sandboxes", json={"ttl": 0})
        assert r.status_code == 400 and "ttl" in r.json()["message"]


def _limits(server: Server, sandbox_id: str) -> list[str]:
    """The sandbox's memory limit, CPU quota and period, read on the host (cgroup v1 or v2)."""
    relative = f"{host.cgroup_parent(server.data_dir)}/{sandbox_id}"
    memory = str(host.cgroup_stats(relative).memory_limit_bytes)
    v2 = Path("/sys/fs/cgroup") / relative / "cpu.max"
    if v2.exists():
        return [memory, *v2.read_text().split()]
    v1 = Path("/sys/fs/cgroup/cpu") / relative
    return [memory, *((v1 / f).read_text().strip() for f in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))]


def test_resize_raises_a_running_containers_limits_and_anything_while_stopped(
    server: Server, acme: Daytona
) -> None:
    """``sandbox.resize``: a started container sandbox gets more CPU and memory at once (its
    cgroup says so), never less (409); a stopped one takes any size at its next start; the disk
    keeps its size (400); another tenant cannot resize it (404); past the tenant's quota 429
    and nothing changed; a running gVisor sandbox answers 409 ``unsupported``."""
    from daytona import Resources

    sb = acme.create(CreateSandboxFromSnapshotParams())
    try:
        sb.resize(Resources(cpu=2, memory=2))
        assert (sb.cpu, sb.memory) == (2, 2)
        assert _limits(server, sb.id) == [str(2 << 30), "200000", "100000"]
        with pytest.raises(DaytonaError, match="only grow") as shrink:
            sb.resize(Resources(memory=1))
        assert shrink.value.status_code == 409
        with pytest.raises(DaytonaError, match="disk cannot be resized"):
            sb.resize(Resources(disk=sb.disk + 5))
        with server.client(server.new_key("other-resize")) as other:
            assert other.post(f"/daytona/api/sandbox/{sb.id}/resize", json={"cpu": 4}).status_code == 404
        sb.stop()
        sb.resize(Resources(cpu=1, memory=1))
        sb.start()
        assert _limits(server, sb.id) == [str(1 << 30), "100000", "100000"]
    finally:
        acme.delete(sb)

    with server.admin() as admin:
        r = admin.post("/tenants", json={"name": "tight", "max_vcpu": 2, "max_memory_mb": 1024})
        assert r.status_code == 201, r.text
    key = server.new_key("tight")
    with server.client(key) as c:
        r = c.post("/sandboxes", json={"cpu": 1, "memory_mb": 512})
        assert r.status_code == 201, r.text
        sandbox_id = r.json()["id"]
        try:
            r = c.post(f"/sandboxes/{sandbox_id}/resize", json={"memory_mb": 2048})
            assert r.status_code == 429 and "MiB" in r.json()["message"]
            assert c.get(f"/sandboxes/{sandbox_id}").json()["memory_mb"] == 512
            r = c.post(f"/sandboxes/{sandbox_id}/resize", json={"cpu": 2, "memory_mb": 1024})
            assert r.status_code == 200 and (r.json()["cpu"], r.json()["memory_mb"]) == (2, 1024)
            assert c.post("/sandboxes", json={"cpu": 0.1, "memory_mb": 64}).status_code == 429  # it counts
            assert c.post(f"/sandboxes/{sandbox_id}/resize", json={"cpu": 0}).status_code == 400
        finally:
            c.delete(f"/sandboxes/{sandbox_id}")
        r = c.post("/sandboxes", json={"isolation": "gvisor", "memory_mb": 256})
        assert r.status_code == 201, r.text
        try:
            r = c.post(f"/sandboxes/{r.json()['id']}/resize", json={"memory_mb": 512})
            assert (
                r.status_code == 409
                and r.json()["code"] == "unsupported"
                and "hot_resize" in r.json()["message"]
            )
        finally:
            c.delete(f"/sandboxes/{r.url.path.split('/')[2]}")

"""A Stockade cluster on one machine: a Ray head, two hosts (each its own Ray node, engine and
data directory), a throwaway PostgreSQL and two API replicas, all real processes stopped by pid.

The replicas serve the whole native API over the cluster: the Stockade SDK with tenant keys
creates on one replica and uses the sandbox through the other (output streamed straight from
the owning host), a tenant never reaches another tenant's sandbox, quotas hold across replicas,
and the hosts' stream endpoints refuse anything not signed with the cluster secret. Sandboxes
spread over both hosts; a full cluster refuses clearly; a host killed with SIGKILL makes its
sandboxes report ``lost`` while the other host's keep working, and the host coming back
re-attaches them. A drained host takes no new sandboxes and keeps its own; a stopped workspace
whose host died starts on the other host from shared storage with its files. The replicas
upgrade a database of the previous schema (a single host's store, before the cluster tables).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import httpx
import pytest

from stockade import Sandbox
from stockade.cluster.streams import operation
from stockade.cluster.tokens import HEADER, sign
from stockade.engine.hostcheck import find_leaks
from stockade.sdk.exceptions import QuotaExceededError, SandboxNotFound

from stockade.cluster.state import sql_url
from stockade.server.store.store import MIGRATIONS

from cluster_harness import CLUSTER_SECRET, SLOTS, Cluster, Host, env, stop, sweep
from server_harness import ADMIN_KEY, STOCKADE, Postgres, needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    needs_root()
    pg = Postgres().start()
    c = Cluster()
    c.postgres = pg
    shared = Path(tempfile.mkdtemp(prefix="stockade-shared-", dir="/var/tmp"))
    try:
        c.start_head()
        for name in ("a", "b"):
            c.hosts[name] = Host(name, c.address, shared_dir=shared)
            c.hosts[name].start()
        c.database_url = pg.create_database("stockade_cluster")
        _previous_schema(c.database_url)
        c.start_api(c.database_url)
        c.start_api(c.database_url)
        _check_upgraded(c.database_url)
        yield c
        _kill_through_api(c)
    finally:
        for api in c.apis:
            stop(api)
        for host in c.hosts.values():
            stop(host.proc)
        stop(c.head)
        pg.stop()
        time.sleep(1)
        left = c.leftover_processes()
        swept = [i for h in c.hosts.values() for i in sweep(h.data_dir)]
        leaks = [leak for h in c.hosts.values() for leak in find_leaks(h.data_dir)]
        for host in c.hosts.values():
            subprocess.run(["rm", "-rf", str(host.data_dir)], check=False)
        shutil.rmtree(c.ray_dir, ignore_errors=True)
        shared_left = sorted(p.name for p in (shared / "workspaces").glob("*"))
        shutil.rmtree(shared, ignore_errors=True)
    assert not shared_left, f"workspace copies left on shared storage: {shared_left}"
    assert not left, f"processes left running: {left}"
    assert not swept, f"sandboxes the cluster did not kill: {swept}"
    assert not leaks, f"the hosts left things behind: {leaks}"


def _previous_schema(url: str) -> None:
    """The database as the previous release left it: the store at migration 0003 (no cluster
    tables), with a tenant."""
    engine = sa.create_engine(sql_url(url))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
        connection.execute(sa.text("INSERT INTO tenants (name, created_at) VALUES ('veteran', 1)"))
    engine.dispose()


def _check_upgraded(url: str) -> None:
    """The replicas brought it to the newest schema (0005; 0004 made the cluster tables), rows kept."""
    engine = sa.create_engine(sql_url(url))
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        assert c.execute(sa.text("SELECT count(*) FROM tenants WHERE name = 'veteran'")).scalar() == 1
        tables = set(sa.inspect(c).get_table_names())
    engine.dispose()
    assert {"cluster_hosts", "cluster_sandboxes"} <= tables


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``stockade ARGS`` against the first replica with the admin key."""
    environ = {**env(), "STOCKADE_API_URL": cluster.api_url, "STOCKADE_API_KEY": ADMIN_KEY}
    return subprocess.run([STOCKADE, *args], capture_output=True, text=True, timeout=120, env=environ)


def _kill_through_api(c: Cluster) -> None:
    """Kill every sandbox through the API, restarting a host a failed test left down."""
    for host in c.hosts.values():
        if not host.running():
            host.start()
    with c.client() as client:
        _wait_for(lambda: all(h["state"] == "alive" for h in _hosts(client).values()), 60)
        for item in client.get("/sandboxes").json()["items"]:
            assert client.delete(f"/sandboxes/{item['id']}").status_code == 204


def _hosts(client: httpx.Client) -> dict[str, dict[str, Any]]:
    r = client.get("/cluster/hosts")
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()}


def _host_of(client: httpx.Client, sandbox_id: str) -> str:
    return next(name for name, h in _hosts(client).items() if sandbox_id in h["sandboxes"])


def _wait_for(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if found := check():
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        time.sleep(0.25)


def _run(client: httpx.Client, sandbox_id: str, **spec: Any) -> dict[str, Any]:
    """Run a process through the native streaming route; its output and end event."""
    out: dict[str, Any] = {"stdout": "", "stderr": ""}
    with client.stream("POST", f"/sandboxes/{sandbox_id}/processes", json=spec) as r:
        if r.status_code != 200:
            r.read()
            return {"status_code": r.status_code, **r.json()}
        for line in r.iter_lines():
            event = json.loads(line)
            if event["type"] in ("stdout", "stderr"):
                out[event["type"]] += base64.b64decode(event["data"]).decode()
            elif event["type"] in ("end", "error"):
                out.update(event)
    return out


def test_the_sdk_with_tenant_keys_works_through_either_replica(cluster: Cluster) -> None:
    urls = cluster.replica_urls
    with cluster.client() as admin:
        _wait_for(
            lambda: len(_hosts(admin)) == 2 and all(h["state"] == "alive" for h in _hosts(admin).values())
        )
        keys = {}
        for tenant in ("acme", "umbrella"):
            r = admin.post("/keys", json={"tenant": tenant})
            assert r.status_code == 201, r.text
            keys[tenant] = r.json()["key"]
    acme = {"api_url": urls[0], "api_key": keys["acme"]}
    sb = Sandbox.create(**acme)
    try:
        # Output streams from the owning host as it is written, not once the command ends.
        arrivals: list[tuple[float, str]] = []
        started = time.monotonic()
        result = sb.commands.run(
            "echo first; sleep 2; echo second; echo oops >&2; exit 3",
            on_stdout=lambda s: arrivals.append((time.monotonic(), s)),
        )
        ended = time.monotonic()
        assert (result.stdout, result.stderr, result.exit_code) == ("first\nsecond\n", "oops\n", 3)
        assert arrivals and arrivals[0][1].startswith("first")
        assert ended - arrivals[0][0] > 1.5 and arrivals[0][0] - started < ended - started - 1.5
        sb.files.write("/home/user/notes.txt", "written through replica one\n")
        assert sb.files.read("/home/user/notes.txt") == "written through replica one\n"
        assert "notes.txt" in [e.name for e in sb.files.list("/home/user")]

        # The same sandbox through the other replica, with the same tenant's key.
        other = Sandbox.connect(sb.sandbox_id, api_url=urls[1], api_key=keys["acme"])
        assert other.files.read("/home/user/notes.txt") == "written through replica one\n"
        assert other.commands.run("cat /home/user/notes.txt | wc -c").stdout == "28\n"
        other.files.write("/home/user/back.bin", b"\x00\xffbinary")
        assert sb.files.read("/home/user/back.bin", format="bytes") == b"\x00\xffbinary"
        assert [s.id for s in Sandbox.list(api_url=urls[1], api_key=keys["acme"])] == [sb.sandbox_id]

        # Another tenant reaches it through neither replica, by no route.
        for url in urls:
            with pytest.raises(SandboxNotFound):
                Sandbox.connect(sb.sandbox_id, api_url=url, api_key=keys["umbrella"])
            assert Sandbox.list(api_url=url, api_key=keys["umbrella"]) == []
            with cluster.client(url, keys["umbrella"]) as intruder:
                base = f"/sandboxes/{sb.sandbox_id}"
                for method, path, body in (
                    ("GET", base, None),
                    ("DELETE", base, None),
                    ("POST", base + "/processes", {"cmd": "id"}),
                    ("GET", base + "/files?path=/home/user/notes.txt", None),
                    ("PUT", base + "/files?path=/home/user/x", None),
                    ("GET", base + "/files/list?path=/home/user", None),
                    ("POST", base + "/timeout", {"timeout": 60}),
                ):
                    r = intruder.request(method, path, json=body)
                    assert r.status_code == 404 and r.json()["code"] == "sandbox_not_found", (
                        method,
                        path,
                        r.text,
                    )
        assert sb.files.read("/home/user/notes.txt") == "written through replica one\n"

        # The host's stream endpoint serves only requests signed for exactly themselves.
        with cluster.client() as admin:
            stream_url = _hosts(admin)[_host_of(admin, sb.sandbox_id)]["stream_url"]
        path, query = f"/sandboxes/{sb.sandbox_id}/files", "path=%2Fhome%2Fuser%2Fnotes.txt"
        good = sign(CLUSTER_SECRET, operation("GET", path, query))
        r = httpx.get(f"{stream_url}{path}?{query}", headers={HEADER: good})
        assert r.status_code == 200 and r.text == "written through replica one\n"
        for token in (
            None,
            sign("another-secret-of-16+", operation("GET", path, query)),
            sign(CLUSTER_SECRET, operation("GET", path, "path=%2Fetc%2Fshadow")),
            sign(CLUSTER_SECRET, operation("GET", path, query), now=time.time() - 61),
        ):
            r = httpx.get(f"{stream_url}{path}?{query}", headers={HEADER: token} if token else {})
            assert r.status_code == 401 and "written" not in r.text, r.text

        # What a replica cannot do yet it refuses clearly (409), never with a crash.
        r = httpx.get(
            f"{urls[0]}/sandboxes/{sb.sandbox_id}/ports/8000/",
            headers={"Authorization": f"Bearer {keys['acme']}"},
        )
        assert r.status_code == 409 and r.json()["code"] == "unsupported", r.text
        with cluster.client(urls[0], keys["acme"]) as c:
            r = c.post("/volumes", json={"name": "v1", "size_mb": 16})
            assert r.status_code == 409 and "volumes" in r.json()["message"], r.text

        # Quotas hold across replicas: one sandbox allowed, the second refused on the other.
        with cluster.client() as admin:
            r = admin.patch("/tenants/acme", json={"max_sandboxes": 1})
            assert r.status_code == 200, r.text
        with pytest.raises(QuotaExceededError):
            Sandbox.create(api_url=urls[1], api_key=keys["acme"])
        # Killed through the second replica, gone through the first.
        other.kill()
        other.close()
        with pytest.raises(SandboxNotFound):
            Sandbox.connect(sb.sandbox_id, **acme)
        assert Sandbox.list(**acme) == []
    finally:
        sb.close()
        with cluster.client() as admin:
            admin.delete(f"/sandboxes/{sb.sandbox_id}")
            admin.patch("/tenants/acme", json={"max_sandboxes": 100})


def test_sandboxes_spread_over_hosts_run_commands_and_free_their_slots(cluster: Cluster) -> None:
    with cluster.client() as c:
        assert httpx.get(cluster.api_url + "/sandboxes").status_code == 401
        _wait_for(lambda: all(h["state"] == "alive" for h in _hosts(c).values()) and len(_hosts(c)) == 2)
        placed: list[str] = []
        for _ in range(2 * SLOTS):
            r = c.post("/sandboxes", json={"isolation": "container", "metadata": {"t": "1"}})
            assert r.status_code == 201, r.text
            placed.append(r.json()["id"])
        # Two slots per host: four sandboxes must use both hosts, two each.
        where = {i: _host_of(c, i) for i in placed}
        assert sorted(where.values()) == ["a", "a", "b", "b"]
        # The cluster is full: a clear 503, not a hang.
        r = c.post("/sandboxes", json={"isolation": "container"})
        assert r.status_code == 503 and r.json()["code"] == "no_capacity", r.text
        # No host offers microVMs (no KVM, no TCG allowance): a clear 400 at once.
        r = c.post("/sandboxes", json={"isolation": "microvm"})
        assert r.status_code == 400 and "microvm" in r.json()["message"], r.text
        r = c.post("/sandboxes", json={"isolation": "cloud"})
        assert r.status_code == 400, r.text
        # Each command runs in its own sandbox on its own host.
        for sandbox_id in placed:
            out = _run(c, sandbox_id, cmd="echo $((6*7)) from $(hostname); echo oops >&2; exit 3")
            assert (out["stdout"], out["stderr"], out["exit_code"]) == (
                f"42 from {sandbox_id}\n",
                "oops\n",
                3,
            ), out
            info = c.get(f"/sandboxes/{sandbox_id}").json()
            assert info["state"] == "running" and info["metadata"] == {"t": "1"}
        listed = {s["id"] for s in c.get("/sandboxes").json()["items"]}
        assert listed == set(placed)
        # Killing one frees its slot on its host: the next create fits again.
        victim = placed[0]
        assert c.delete(f"/sandboxes/{victim}").status_code == 204
        assert c.get(f"/sandboxes/{victim}").status_code == 404
        assert c.delete(f"/sandboxes/{victim}").status_code == 404
        r = c.post("/sandboxes", json={"isolation": "container"})
        assert r.status_code == 201, r.text
        assert _host_of(c, r.json()["id"]) == where[victim]
        for sandbox_id in [*placed[1:], r.json()["id"]]:
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert c.get("/sandboxes").json()["items"] == []
        assert all(h["sandboxes"] == [] for h in _hosts(c).values())

        # gVisor goes through the same path.
        r = c.post("/sandboxes", json={"isolation": "gvisor"})
        assert r.status_code == 201, r.text
        gvisor = r.json()["id"]
        assert _run(c, gvisor, argv=["python3", "-c", "print(7*6)"])["stdout"] == "42\n"
        assert c.delete(f"/sandboxes/{gvisor}").status_code == 204

        # A sandbox its host ends by itself (its timeout) leaves the cluster's records and
        # frees its slot: the full set of four fits again afterwards.
        r = c.post("/sandboxes", json={"isolation": "container", "timeout": 2})
        assert r.status_code == 201, r.text
        expiring = r.json()["id"]
        _wait_for(lambda: c.get("/sandboxes").json()["items"] == [], 30)
        assert c.get(f"/sandboxes/{expiring}").status_code == 404
        again = []
        for _ in range(2 * SLOTS):
            r = c.post("/sandboxes", json={"isolation": "container"})
            assert r.status_code == 201, r.text
            again.append(r.json()["id"])
        for sandbox_id in again:
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204


def test_a_killed_host_reports_its_sandboxes_lost_and_reattaches_them_on_return(cluster: Cluster) -> None:
    with cluster.client() as c:
        on: dict[str, str] = {}
        while set(on.values()) != {"a", "b"}:
            r = c.post("/sandboxes", json={"isolation": "container"})
            assert r.status_code == 201, r.text
            on[r.json()["id"]] = _host_of(c, r.json()["id"])
        on_a = [i for i, h in on.items() if h == "a"]
        on_b = [i for i, h in on.items() if h == "b"]
        assert _run(c, on_a[0], cmd="echo kept > /home/user/f")["exit_code"] == 0

        host_a = cluster.hosts["a"]
        killed_at = time.monotonic()
        stop(host_a.proc, signal.SIGKILL)
        lost = _wait_for(lambda: (i := c.get(f"/sandboxes/{on_a[0]}").json())["state"] == "lost" and i)
        seconds = time.monotonic() - killed_at
        assert lost["reason"] == "host_lost" and seconds < 20
        assert _hosts(c)["a"]["state"] == "down"
        # Still listed (it exists, lost), and through the other replica too.
        with cluster.client(cluster.replica_urls[1]) as c2:
            listed = {s["id"]: s["state"] for s in c2.get("/sandboxes").json()["items"]}
            assert listed[on_a[0]] == "lost"
        out = _run(c, on_a[0], cmd="true")
        assert out.get("status_code") == 502 and "host a" in out["message"], out
        # The other host's sandboxes are untouched.
        assert _run(c, on_b[0], cmd="echo still here")["stdout"] == "still here\n"
        assert c.get(f"/sandboxes/{on_b[0]}").json()["state"] == "running"
        # New sandboxes go to the surviving host only.
        r = c.post("/sandboxes", json={"isolation": "container"})
        if r.status_code == 201:
            assert _host_of(c, r.json()["id"]) == "b"
            on_b.append(r.json()["id"])
        else:
            assert r.json()["code"] == "no_capacity", r.text

        # The host comes back on the same data directory: its engine re-attaches what still
        # runs, and the API reports those sandboxes running again, files intact.
        host_a.start()
        _wait_for(lambda: c.get(f"/sandboxes/{on_a[0]}").json().get("state") == "running", 60)
        assert _run(c, on_a[0], cmd="cat /home/user/f")["stdout"] == "kept\n"
        assert _hosts(c)["a"]["state"] == "alive"
        for sandbox_id in [*on_a, *on_b]:
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204


def test_the_e2b_sdk_works_unchanged_through_a_replica(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E2B's own SDK (PyPI ``e2b``), pointed at the second replica's /e2b front end."""
    from e2b import Sandbox as E2BSandbox

    with cluster.client() as admin:
        r = admin.post("/keys", json={"tenant": "e2b-tenant", "style": "e2b"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
    url = cluster.replica_urls[1] + "/e2b"
    monkeypatch.setenv("E2B_API_URL", url)
    monkeypatch.setenv("E2B_SANDBOX_URL", url)
    monkeypatch.setenv("E2B_API_KEY", key)
    sb = E2BSandbox.create(timeout=120)
    try:
        out = sb.commands.run("echo $((6*7)); echo err >&2")
        assert (out.stdout, out.stderr, out.exit_code) == ("42\n", "err\n", 0)
        sb.files.write("/home/user/e2b.txt", "through the cluster")
        assert sb.files.read("/home/user/e2b.txt") == "through the cluster"
        # The native SDK's view of the same sandbox, through the other replica.
        native = Sandbox.connect(sb.sandbox_id, api_url=cluster.replica_urls[0], api_key=key)
        assert native.files.read("/home/user/e2b.txt") == "through the cluster"
        native.close()
        # An access token minted by one replica opens the sandbox's ports through the other
        # (they derive one token secret from the cluster's); a forged one does not.
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            r = c.post(f"{cluster.replica_urls[0]}/sandboxes/{sb.sandbox_id}/access-token")
            assert r.status_code == 201, r.text
            token = r.json()["token"]
        port = f"{cluster.replica_urls[1]}/sandboxes/{sb.sandbox_id}/ports/8000/"
        assert httpx.get(port, params={"stockade_token": token}, timeout=30).status_code not in (401, 404)
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert httpx.get(port, params={"stockade_token": forged}, timeout=30).status_code == 401
    finally:
        sb.kill()
    with cluster.client() as admin:
        assert admin.get(f"/sandboxes/{sb.sandbox_id}").status_code == 404


def test_the_daytona_sdk_works_unchanged_through_a_replica(cluster: Cluster) -> None:
    """Daytona's own SDK (PyPI ``daytona``), pointed at the first replica's /daytona front."""
    from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

    with cluster.client() as admin:
        r = admin.post("/keys", json={"tenant": "daytona-tenant"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
    daytona = Daytona(DaytonaConfig(api_key=key, api_url=cluster.replica_urls[0] + "/daytona/api"))
    sb = daytona.create(CreateSandboxFromSnapshotParams(env_vars={"GREETING": "hello"}))
    try:
        r = sb.process.exec("echo $GREETING from daytona; exit 3")
        assert (r.exit_code, r.result) == (3, "hello from daytona\n")
        sb.fs.upload_file(b"uploaded", "/home/user/d.txt")
        assert sb.fs.download_file("/home/user/d.txt") == b"uploaded"
    finally:
        daytona.delete(sb)
    with cluster.client() as admin:
        assert admin.get("/sandboxes").json()["items"] == []


def test_a_terminal_works_through_a_replica(cluster: Cluster) -> None:
    """The PTY WebSocket ends on the replica: output streams from the host, keys and resizes
    go to the host through its actor."""
    screen = bytearray()

    def shows(text: bytes) -> None:
        _wait_for(lambda: text in screen, 30)

    with cluster.client() as admin:
        key = admin.post("/keys", json={"tenant": "terminal"}).json()["key"]
    with Sandbox.create(api_url=cluster.replica_urls[1], api_key=key) as sb:
        term = sb.pty.create(80, 24, on_data=screen.extend, cmd="bash --norc")
        assert term.pid > 0
        term.send_input("echo h''i; tty\n")
        shows(b"hi\r\n")
        shows(b"/dev/pts/")
        term.resize(100, 40)
        term.send_input("stty size\n")
        shows(b"40 100")
        term.send_input("exit 3\n")
        assert term.wait().exit_code == 3


def test_a_replica_killed_mid_stream_loses_nothing(cluster: Cluster) -> None:
    """SIGKILL the replica a client is streaming from: the command runs on, and the client
    reconnects to it through another replica and follows it to its end."""
    doomed_url = cluster.start_api(cluster.database_url)
    doomed = cluster.apis[-1]
    with cluster.client() as admin:
        key = admin.post("/keys", json={"tenant": "steady"}).json()["key"]
    seen: list[str] = []
    sb = Sandbox.create(api_url=doomed_url, api_key=key)
    try:
        handle = sb.commands.run(
            "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done; echo done > /home/user/finished; exit 4",
            background=True,
            on_stdout=seen.append,
        )
        _wait_for(lambda: any("tick 1" in s for s in seen), 30)
        stop(doomed, signal.SIGKILL)
        again = Sandbox.connect(sb.sandbox_id, api_url=cluster.replica_urls[0], api_key=key)
        later: list[str] = []
        result = again.commands.connect(handle.pid, on_stdout=later.append).wait()
        assert result.exit_code == 4
        assert "tick 6" in "".join(later), later
        assert again.files.read("/home/user/finished") == "done\n"
        again.kill()
        again.close()
    finally:
        sb.close()
        with cluster.client() as admin:
            admin.delete(f"/sandboxes/{sb.sandbox_id}")


def test_a_drained_host_takes_no_new_sandboxes_and_keeps_its_own(cluster: Cluster) -> None:
    with cluster.client() as c:
        _wait_for(lambda: all(h["state"] == "alive" for h in _hosts(c).values()))
        on: dict[str, str] = {}
        while "a" not in on.values():
            r = c.post("/sandboxes", json={"isolation": "container"})
            assert r.status_code == 201, r.text
            on[r.json()["id"]] = _host_of(c, r.json()["id"])
        keep = next(i for i, h in on.items() if h == "a")
        for sandbox_id in set(on) - {keep}:
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert _run(c, keep, cmd="echo before > /home/user/f")["exit_code"] == 0

        out = _cli(cluster, "host", "drain", "a")
        assert out.returncode == 0 and "draining" in out.stdout, out.stderr
        hosts = _hosts(c)
        assert hosts["a"]["draining"] is True and hosts["b"]["draining"] is False
        assert hosts["a"]["sandboxes"] == [keep]
        listed = _cli(cluster, "host", "ls")
        assert listed.returncode == 0, listed.stderr
        assert re.search(r"\ba\b\W+alive\W+yes\b", listed.stdout), listed.stdout
        assert re.search(r"\bb\b\W+alive\W+no\b", listed.stdout), listed.stdout

        # New sandboxes go to b only, although a has a free slot; b full means no capacity.
        new = []
        for _ in range(SLOTS):
            r = c.post("/sandboxes", json={"isolation": "container"})
            assert r.status_code == 201, r.text
            new.append(r.json()["id"])
            assert _host_of(c, new[-1]) == "b"
        r = c.post("/sandboxes", json={"isolation": "container"})
        assert r.status_code == 503 and r.json()["code"] == "no_capacity", r.text
        # The drained host's sandbox works on, through both replicas.
        assert _run(c, keep, cmd="cat /home/user/f")["stdout"] == "before\n"
        with cluster.client(cluster.replica_urls[1]) as c2:
            assert _run(c2, keep, cmd="echo after")["stdout"] == "after\n"
        # Its slot, freed, still takes no new sandbox while the host drains.
        assert c.delete(f"/sandboxes/{keep}").status_code == 204
        r = c.post("/sandboxes", json={"isolation": "container"})
        assert r.status_code == 503 and r.json()["code"] == "no_capacity", r.text
        assert _hosts(c)["a"]["sandboxes"] == []

        out = _cli(cluster, "host", "undrain", "a")
        assert out.returncode == 0, out.stderr
        assert _hosts(c)["a"]["draining"] is False
        r = c.post("/sandboxes", json={"isolation": "container"})
        assert r.status_code == 201, r.text
        new.append(r.json()["id"])
        assert _host_of(c, new[-1]) == "a"
        # Unknown hosts and tenants' keys are refused clearly.
        r = c.post("/cluster/hosts/nosuch/drain")
        assert r.status_code == 404 and "nosuch" in r.json()["message"], r.text
        tenant_key = c.post("/keys", json={"tenant": "drainer"}).json()["key"]
        with cluster.client(key=tenant_key) as t:
            assert t.post("/cluster/hosts/b/drain").status_code == 403
        assert _hosts(c)["b"]["draining"] is False
        for sandbox_id in new:
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204


def test_a_stopped_workspace_restarts_on_another_host_after_its_host_dies(cluster: Cluster) -> None:
    shared = next(iter(cluster.hosts.values())).shared_dir
    assert shared is not None
    with cluster.client() as c:
        _wait_for(lambda: all(h["state"] == "alive" for h in _hosts(c).values()))
        on: dict[str, str] = {}
        while list(on.values()).count("a") < 2:
            r = c.post(
                "/sandboxes", json={"isolation": "container", "persistence": "workspace", "timeout": 600}
            )
            assert r.status_code == 201, r.text
            on[r.json()["id"]] = _host_of(c, r.json()["id"])
        stopped, running = [i for i, h in on.items() if h == "a"][:2]
        for sandbox_id in set(on) - {stopped, running}:
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert _run(c, stopped, cmd="echo precious > /home/user/keep.txt")["exit_code"] == 0
        assert _run(c, running, cmd="echo mine > /home/user/r.txt")["exit_code"] == 0
        r = c.post(f"/sandboxes/{stopped}/stop")
        assert r.status_code == 200 and r.json()["state"] == "stopped", r.text
        # Its last stopped state is on shared storage by the time the stop answers.
        assert (shared / "workspaces" / stopped / "layer.tar.lz4").is_file()
        assert not (shared / "workspaces" / running).exists()

        host_a = cluster.hosts["a"]
        stop(host_a.proc, signal.SIGKILL)
        lost = _wait_for(lambda: (i := c.get(f"/sandboxes/{stopped}").json())["state"] == "lost" and i)
        assert lost["reason"] == "host_lost" and "another host" in lost["message"], lost
        gone = c.get(f"/sandboxes/{running}").json()
        assert gone["state"] == "lost" and gone["reason"] == "host_lost"
        assert "its disk is only on a" in gone["message"], gone
        # The running one cannot start elsewhere: 502 saying its disk is on host a.
        r = c.post(f"/sandboxes/{running}/start")
        assert r.status_code == 502 and "only on a" in r.json()["message"], r.text

        # The stopped one starts on host b, through the other replica, with its files.
        with cluster.client(cluster.replica_urls[1]) as c2:
            r = c2.post(f"/sandboxes/{stopped}/start")
            assert r.status_code == 200 and r.json()["state"] == "running", r.text
            assert _host_of(c2, stopped) == "b"
            assert _run(c2, stopped, cmd="cat /home/user/keep.txt")["stdout"] == "precious\n"
        info = c.get(f"/sandboxes/{stopped}").json()
        assert info["state"] == "running" and info["persistence"] == "workspace"
        assert _run(c, stopped, cmd="echo moved >> /home/user/keep.txt")["exit_code"] == 0

        # Host a comes back: its running workspace is back with its files; its stale copy
        # of the moved one is removed (never two copies of one sandbox).
        host_a.start()
        _wait_for(lambda: c.get(f"/sandboxes/{running}").json().get("state") == "running", 60)
        assert _run(c, running, cmd="cat /home/user/r.txt")["stdout"] == "mine\n"
        _wait_for(lambda: not (host_a.data_dir / "sandboxes" / stopped).exists(), 30)
        assert _host_of(c, stopped) == "b"
        assert _run(c, stopped, cmd="cat /home/user/keep.txt")["stdout"] == "precious\nmoved\n"
        for sandbox_id in (stopped, running):
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert not (shared / "workspaces" / stopped).exists()


def test_two_replicas_creating_for_one_tenant_at_once_cannot_pass_its_quota(cluster: Cluster) -> None:
    """Both replicas get a create for a tenant allowed one sandbox at the same instant: one
    succeeds, the other is refused (429), every round."""
    from concurrent.futures import ThreadPoolExecutor

    with cluster.client() as admin:
        assert admin.post("/tenants", json={"name": "racer", "max_sandboxes": 1}).status_code == 201
        key = admin.post("/keys", json={"tenant": "racer"}).json()["key"]

    def create(url: str) -> httpx.Response:
        with cluster.client(url, key) as c:
            return c.post("/sandboxes", json={"isolation": "container"})

    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            answers = list(pool.map(create, cluster.replica_urls[:2]))
            codes = sorted(r.status_code for r in answers)
            made = [r.json()["id"] for r in answers if r.status_code == 201]
            with cluster.client(key=key) as c:
                for sandbox_id in made:
                    assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
            assert codes == [201, 429], [r.text for r in answers]
            assert "racer" in next(r.json()["message"] for r in answers if r.status_code == 429)


def test_ray_wants_its_token_and_sandboxes_cannot_reach_ray_or_the_hosts(cluster: Cluster) -> None:
    """Ray runs with token authentication: a caller without the token or with a wrong one is
    refused (the right one is let in); a sandbox with the widest network policy reaches neither
    Ray's ports nor the hosts' stream endpoints nor the replicas, on any of this machine's
    addresses."""
    import ipaddress
    from urllib.parse import urlsplit

    from cluster_harness import RAY, RAY_TOKEN

    home = tempfile.mkdtemp(prefix="stockade-home-")  # no ~/.ray/auth_token to fall back on

    def ray_status(**extra: str) -> int:
        environment = env(HOME=home, **extra)
        for name in [k for k, v in extra.items() if v == ""]:
            environment.pop(name)
        done = subprocess.run(
            [RAY, "status", "--address", cluster.address], env=environment, capture_output=True, timeout=120
        )
        return done.returncode

    try:
        assert ray_status(RAY_AUTH_TOKEN=RAY_TOKEN) == 0
        assert ray_status(RAY_AUTH_TOKEN="0" * 64) != 0
        assert ray_status(RAY_AUTH_MODE="", RAY_AUTH_TOKEN="") != 0
    finally:
        shutil.rmtree(home, ignore_errors=True)

    with cluster.client() as admin:
        streams = [urlsplit(h["stream_url"]).port for h in _hosts(admin).values() if h["stream_url"]]
        key = admin.post("/keys", json={"tenant": "prober"}).json()["key"]
    ports = sorted({cluster.port, *streams, *(urlsplit(u).port for u in cluster.replica_urls)})
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    addresses = [
        a.split("/")[0]
        for a in re.findall(r"inet (\S+)", shown)
        if not ipaddress.ip_address(a.split("/")[0]).is_loopback
    ]
    assert addresses
    sb = Sandbox.create(network={"allow_out": ["0.0.0.0/0"]}, api_url=cluster.replica_urls[0], api_key=key)
    try:
        probe = (
            "import json, socket, sys\n"
            "out = {}\n"
            "for a in sys.argv[1].split(','):\n"
            "    for p in sys.argv[2].split(','):\n"
            "        try:\n"
            "            socket.create_connection((a, int(p)), timeout=2).close(); out[f'{a}:{p}'] = 'open'\n"
            "        except OSError as e:\n"
            "            out[f'{a}:{p}'] = type(e).__name__\n"
            "print(json.dumps(out))\n"
        )
        sb.files.write("/tmp/probe.py", probe)
        result = sb.commands.run(
            f"python3 /tmp/probe.py {','.join(addresses)} {','.join(map(str, ports))}", timeout=120
        )
        reached = json.loads(result.stdout)
        assert len(reached) == len(addresses) * len(ports)
        assert "open" not in reached.values(), reached
    finally:
        sb.kill()


def test_a_database_restart_is_survived_through_the_replicas(cluster: Cluster) -> None:
    """PostgreSQL stops under the running cluster: a create through a replica answers 503
    ``store_unavailable`` (never a 500) and the replica stays up; once it is back, both replicas
    serve again without a restart."""
    with cluster.client() as admin:
        key = admin.post("/keys", json={"tenant": "restart"}).json()["key"]
    headers = {"Authorization": f"Bearer {key}"}
    cluster.postgres.pause()
    try:
        with httpx.Client(headers=headers, timeout=60) as c:
            r = c.post(f"{cluster.replica_urls[0]}/sandboxes", json={"memory_mb": 128})
            assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
            assert c.get(f"{cluster.replica_urls[1]}/health").status_code == 200
    finally:
        cluster.postgres.resume()
    with httpx.Client(headers=headers, timeout=120) as c:
        for url in cluster.replica_urls[:2]:  # the module's two (a test adds and kills a third)
            r = c.post(f"{url}/sandboxes", json={"memory_mb": 128})
            assert r.status_code == 201, r.text
            assert c.delete(f"{url}/sandboxes/{r.json()['id']}").status_code == 204

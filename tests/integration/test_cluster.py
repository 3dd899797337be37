"""A Stockade cluster on one machine: a Ray head, two hosts (each its own Ray node, engine and
data directory), a throwaway PostgreSQL and an API replica, all real processes stopped by pid.

Sandboxes spread over both hosts because each host offers two container slots; a full cluster
refuses clearly; commands run on the owning host; a host killed with SIGKILL makes its sandboxes
report ``lost`` while the other host's keep working, and the host coming back re-attaches them.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from typing import Any, Iterator

import httpx
import pytest

from stockade.engine.hostcheck import find_leaks

from cluster_harness import SLOTS, Cluster, Host, stop, sweep
from server_harness import Postgres, needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    needs_root()
    pg = Postgres().start()
    c = Cluster()
    try:
        c.start_head()
        for name in ("a", "b"):
            c.hosts[name] = Host(name, c.address)
            c.hosts[name].start()
        c.start_api(pg.create_database("stockade_cluster"))
        yield c
        _kill_through_api(c)
    finally:
        stop(c.api)
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
    assert not left, f"processes left running: {left}"
    assert not swept, f"sandboxes the cluster did not kill: {swept}"
    assert not leaks, f"the hosts left things behind: {leaks}"


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


def _wait_for(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if found := check():
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        time.sleep(0.25)


def test_sandboxes_spread_over_hosts_run_commands_and_free_their_slots(cluster: Cluster) -> None:
    with cluster.client() as c:
        assert httpx.get(cluster.api_url + "/sandboxes").status_code == 401
        _wait_for(lambda: all(h["state"] == "alive" for h in _hosts(c).values())
                  and len(_hosts(c)) == 2)
        placed: dict[str, str] = {}
        for _ in range(2 * SLOTS):
            r = c.post("/sandboxes", json={"isolation": "container", "metadata": {"t": "1"}})
            assert r.status_code == 201, r.text
            placed[r.json()["id"]] = r.headers["x-stockade-host"]
        # Two slots per host: four sandboxes must use both hosts, two each.
        assert sorted(placed.values()) == ["a", "a", "b", "b"]
        hosts = _hosts(c)
        for sandbox_id, host in placed.items():
            assert sandbox_id in hosts[host]["sandboxes"]
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
            r = c.post(f"/sandboxes/{sandbox_id}/run",
                       json={"cmd": "echo $((6*7)) from $(hostname); echo oops >&2; exit 3"})
            assert r.status_code == 200, r.text
            assert r.json() == {"stdout": f"42 from {sandbox_id}\n", "stderr": "oops\n",
                                "exit_code": 3, "status": r.json()["status"]}
            info = c.get(f"/sandboxes/{sandbox_id}").json()
            assert info["state"] == "running" and info["metadata"] == {"t": "1"}
        listed = {s["id"] for s in c.get("/sandboxes").json()["items"]}
        assert listed == set(placed)
        # Killing one frees its slot on its host: the next create fits again.
        victim = next(iter(placed))
        assert c.delete(f"/sandboxes/{victim}").status_code == 204
        assert c.get(f"/sandboxes/{victim}").status_code == 404
        assert c.delete(f"/sandboxes/{victim}").status_code == 404
        r = c.post("/sandboxes", json={"isolation": "container"})
        assert r.status_code == 201, r.text
        assert r.headers["x-stockade-host"] == placed[victim]
        for sandbox_id in [*placed, r.json()["id"]]:
            if sandbox_id != victim:
                assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert c.get("/sandboxes").json()["items"] == []
        assert all(h["sandboxes"] == [] for h in _hosts(c).values())

        # gVisor goes through the same path.
        r = c.post("/sandboxes", json={"isolation": "gvisor"})
        assert r.status_code == 201, r.text
        gvisor = r.json()["id"]
        r = c.post(f"/sandboxes/{gvisor}/run", json={"argv": ["python3", "-c", "print(7*6)"]})
        assert r.json()["stdout"] == "42\n", r.text
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


def test_a_killed_host_reports_its_sandboxes_lost_and_reattaches_them_on_return(
        cluster: Cluster) -> None:
    with cluster.client() as c:
        on: dict[str, str] = {}
        while set(on.values()) != {"a", "b"}:
            r = c.post("/sandboxes", json={"isolation": "container"})
            assert r.status_code == 201, r.text
            on[r.json()["id"]] = r.headers["x-stockade-host"]
        on_a = [i for i, h in on.items() if h == "a"]
        on_b = [i for i, h in on.items() if h == "b"]
        r = c.post(f"/sandboxes/{on_a[0]}/run", json={"cmd": "echo kept > /home/user/f"})
        assert r.json()["exit_code"] == 0, r.text

        host_a = cluster.hosts["a"]
        killed_at = time.monotonic()
        stop(host_a.proc, signal.SIGKILL)
        lost = _wait_for(lambda: (i := c.get(f"/sandboxes/{on_a[0]}").json())["state"] == "lost"
                         and i)
        seconds = time.monotonic() - killed_at
        assert lost["reason"] == "host_lost" and seconds < 20
        assert _hosts(c)["a"]["state"] == "down"
        r = c.post(f"/sandboxes/{on_a[0]}/run", json={"cmd": "true"})
        assert r.status_code == 502 and "host a" in r.json()["message"], r.text
        # The other host's sandboxes are untouched.
        r = c.post(f"/sandboxes/{on_b[0]}/run", json={"cmd": "echo still here"})
        assert r.json()["stdout"] == "still here\n", r.text
        assert c.get(f"/sandboxes/{on_b[0]}").json()["state"] == "running"
        # New sandboxes go to the surviving host only.
        r = c.post("/sandboxes", json={"isolation": "container"})
        if r.status_code == 201:
            assert r.headers["x-stockade-host"] == "b"
            on_b.append(r.json()["id"])
        else:
            assert r.json()["code"] == "no_capacity", r.text

        # The host comes back on the same data directory: its engine re-attaches what still
        # runs, and the API reports those sandboxes running again, files intact.
        host_a.start()
        _wait_for(lambda: c.get(f"/sandboxes/{on_a[0]}").json().get("state") == "running", 60)
        r = c.post(f"/sandboxes/{on_a[0]}/run", json={"cmd": "cat /home/user/f"})
        assert r.json()["stdout"] == "kept\n", r.text
        assert _hosts(c)["a"]["state"] == "alive"
        for sandbox_id in [*on_a, *on_b]:
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204

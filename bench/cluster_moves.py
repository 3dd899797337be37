"""Issue 16 figures for drains and moving workspaces: ``python -m bench.cluster_moves [--runs 5]``.

In one run, interleaved so both sides see the same load (warm pools off):
- a workspace's stop through an API replica (two hosts sharing a directory: the stop answers
  once the workspace's layer is archived onto shared storage) vs the same stop on a single-host
  ``stockade serve`` (no export), medians;
- a stopped workspace's start on another host after its own host was SIGKILLed (the replica
  moves it: adopt from shared storage, restore, boot; one sample) vs a stopped workspace's start
  on its own host through the same replica (median);
- ``drain`` and ``undrain`` of a host with free slots (Ray placement-group holds), medians.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ._common import machine, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cluster_harness import Cluster, Host, stop, sweep  # noqa: E402
from server_harness import Postgres, Server  # noqa: E402

WORKSPACE = {"isolation": "container", "persistence": "workspace", "timeout": 600}


def timed(c: httpx.Client, path: str, **kwargs: Any) -> float:
    start = time.perf_counter()
    r = c.post(path, **kwargs)
    assert r.status_code == 200, r.text
    return time.perf_counter() - start


def stopped_workspace(c: httpx.Client) -> tuple[str, float]:
    """A workspace with a file written, then stopped: its id and the stop's seconds."""
    sandbox_id = c.post("/sandboxes", json=WORKSPACE).json()["id"]
    r = c.post(
        f"/sandboxes/{sandbox_id}/processes", json={"cmd": "head -c 1000000 /dev/urandom > /home/user/blob"}
    )
    assert '"end"' in r.text, r.text
    return sandbox_id, timed(c, f"/sandboxes/{sandbox_id}/stop")


def host_of(c: httpx.Client, sandbox_id: str) -> str:
    return next(h["name"] for h in c.get("/cluster/hosts").json() if sandbox_id in h["sandboxes"])


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    pg = Postgres().start()
    cluster = Cluster()
    shared = Path(tempfile.mkdtemp(prefix="stockade-bench-shared-", dir="/var/tmp"))
    server = Server(
        Path(tempfile.mkdtemp(prefix="stockade-bench-srv-", dir="/var/tmp")),
        database_url=pg.create_database("stockade_bench_single"),
    )
    for name in ("a", "b"):
        cluster.hosts[name] = Host(name, cluster.address, slots="container=4", shared_dir=shared)
    try:
        server.start()
        cluster.start_head()
        for host in cluster.hosts.values():
            host.start()
        cluster.start_api(pg.create_database("stockade_bench"))
        with server.admin() as s, cluster.client() as c:
            while len(c.get("/cluster/hosts").json()) < 2:
                time.sleep(0.2)
            srv_stop, clu_stop, own_start, drains, undrains = [], [], [], [], []
            for _ in range(args.runs):
                sid, took = stopped_workspace(s)
                srv_stop.append(took)
                s.delete(f"/sandboxes/{sid}")
                cid, took = stopped_workspace(c)
                clu_stop.append(took)
                own_start.append(timed(c, f"/sandboxes/{cid}/start"))
                c.delete(f"/sandboxes/{cid}")
                drains.append(timed(c, "/cluster/hosts/b/drain"))
                undrains.append(timed(c, "/cluster/hosts/b/undrain"))
            # One move: a stopped workspace on a, a killed, started (moved) on b.
            c.post("/cluster/hosts/b/drain")
            cid, _ = stopped_workspace(c)
            c.post("/cluster/hosts/b/undrain")
            assert host_of(c, cid) == "a"
            stop(cluster.hosts["a"].proc, signal.SIGKILL)
            while c.get(f"/sandboxes/{cid}").json()["state"] != "lost":
                time.sleep(0.05)
            moved = timed(c, f"/sandboxes/{cid}/start")
            assert host_of(c, cid) == "b"
            cluster.hosts["a"].start()  # its stale copy goes once it syncs (never two copies)
            while (cluster.hosts["a"].data_dir / "sandboxes" / cid).exists():
                time.sleep(0.2)
            c.delete(f"/sandboxes/{cid}")
        m = statistics.median
        print(machine())
        table(
            [
                ("measure", "baseline", "cluster", "ratio", "added"),
                (
                    f"workspace stop (1 MB written; median of {args.runs}), single host vs "
                    f"replica with export to shared storage",
                    ms(m(srv_stop)),
                    ms(m(clu_stop)),
                    f"{m(clu_stop) / m(srv_stop):.2f}x",
                    ms(m(clu_stop) - m(srv_stop)),
                ),
                (
                    "stopped workspace start: on its own host (median) vs moved to another host "
                    "after its host's death (one sample)",
                    ms(m(own_start)),
                    ms(moved),
                    f"{moved / m(own_start):.2f}x",
                    ms(moved - m(own_start)),
                ),
            ]
        )
        print(
            f"drain of a host with 4 free container slots (median of {args.runs}): "
            f"{ms(m(drains))}; undrain: {ms(m(undrains))}"
        )
    finally:
        server.kill_all_sandboxes()
        server.stop()
        for api in cluster.apis:
            stop(api)
        for host in cluster.hosts.values():
            stop(host.proc)
        stop(cluster.head)
        pg.stop()
        left = [i for h in cluster.hosts.values() for i in sweep(h.data_dir)]
        subprocess.run(
            [
                "rm",
                "-rf",
                str(server.data_dir),
                str(cluster.ray_dir),
                str(shared),
                *(str(h.data_dir) for h in cluster.hosts.values()),
            ],
            check=False,
        )
        if left:
            print(f"warning: the cluster left sandboxes behind (swept): {left}")


if __name__ == "__main__":
    main()

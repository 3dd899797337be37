"""Issue 16 figures: ``python -m bench.cluster [--runs 10] [--round-trips 30]``.

On one machine, in the same run and interleaved so both see the same load:
- create-to-first-output and command round trip through the cluster (the native API on an API
  replica: the create placed by Ray and made by the host actor, the process's output streamed
  from the host's stream endpoint) vs a single-host ``stockade serve`` (the baseline), both
  with the same requests through the same routes;
- placement decision time (reserve and release a slot: a Ray placement group), from a driver;
- the time from a host's SIGKILL to its sandbox reported ``lost`` (one sample).

Warm pools are off on both sides (STOCKADE_POOL_SIZE=0). Not yet measured: creates per second
with two hosts vs one (needs a second host's CPU; on one 2-core machine it measures nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ._common import machine, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cluster_harness import Cluster, Host, stop, sweep  # noqa: E402
from server_harness import Postgres, Server  # noqa: E402


def first_output(c: httpx.Client) -> float:
    """Create a sandbox and start ``echo hi`` in it: seconds until its output arrives."""
    start = time.perf_counter()
    sb = c.post("/sandboxes", json={}).json()
    with c.stream("POST", f"/sandboxes/{sb['id']}/processes", json={"cmd": "echo hi"}) as r:
        for line in r.iter_lines():
            if json.loads(line).get("type") == "stdout":
                break
    took = time.perf_counter() - start
    c.delete(f"/sandboxes/{sb['id']}")
    return took


def round_trip(c: httpx.Client, sandbox_id: str) -> float:
    """Run ``true`` to its end event."""
    start = time.perf_counter()
    r = c.post(f"/sandboxes/{sandbox_id}/processes", json={"argv": ["true"]})
    assert '"end"' in r.text, r.text
    return time.perf_counter() - start


def placement_times(address: str, runs: int) -> list[float]:
    """Reserve and release a container slot ``runs`` times from a Ray driver of our own."""
    import ray

    from stockade.cluster.node import NAMESPACE
    from stockade.cluster.placement import Placer

    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    placer = Placer(ray)

    async def one() -> float:
        start = time.perf_counter()
        slot = await placer.reserve("container")
        took = time.perf_counter() - start
        await placer.release(slot.name)
        return took

    try:
        return [asyncio.run(one()) for _ in range(runs)]
    finally:
        ray.shutdown()


def time_to_lost(c: httpx.Client, host: Host) -> float:
    sb = c.post("/sandboxes", json={}).json()
    killed = time.perf_counter()
    stop(host.proc, signal.SIGKILL)
    while c.get(f"/sandboxes/{sb['id']}").json()["state"] != "lost":
        time.sleep(0.05)
    took = time.perf_counter() - killed
    host.start()
    while c.get(f"/sandboxes/{sb['id']}").json()["state"] != "running":
        time.sleep(0.2)
    c.delete(f"/sandboxes/{sb['id']}")
    return took


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--round-trips", type=int, default=30)
    args = parser.parse_args()
    pg = Postgres().start()
    cluster = Cluster()
    # The baseline keeps its store in the same PostgreSQL, so only the cluster's hops differ.
    server = Server(
        Path(tempfile.mkdtemp(prefix="stockade-bench-srv-", dir="/var/tmp")),
        database_url=pg.create_database("stockade_bench_single"),
    )
    host = Host("bench", cluster.address, slots="container=4")
    cluster.hosts["bench"] = host
    try:
        server.start()
        cluster.start_head()
        host.start()
        cluster.start_api(pg.create_database("stockade_bench"))
        with server.admin() as s, cluster.client() as c:
            while not c.get("/cluster/hosts").json():
                time.sleep(0.2)
            first_output(s)  # warm both paths up
            first_output(c)
            srv_c, clu_c = [], []
            for _ in range(args.runs):
                srv_c.append(first_output(s))
                clu_c.append(first_output(c))
            sb_s = s.post("/sandboxes", json={}).json()["id"]
            sb_c = c.post("/sandboxes", json={}).json()["id"]
            srv_r, clu_r = [], []
            for _ in range(args.round_trips):
                srv_r.append(round_trip(s, sb_s))
                clu_r.append(round_trip(c, sb_c))
            s.delete(f"/sandboxes/{sb_s}")
            c.delete(f"/sandboxes/{sb_c}")
            placing = placement_times(cluster.address, args.round_trips)
            lost = time_to_lost(c, host)
        m = statistics.median
        print(machine())
        table(
            [
                ("measure", "single host", "cluster", "ratio", "added", "goal"),
                (
                    f"create-to-first-output (median of {args.runs})",
                    ms(m(srv_c)),
                    ms(m(clu_c)),
                    f"{m(clu_c) / m(srv_c):.2f}x",
                    ms(m(clu_c) - m(srv_c)),
                    "<= 1.2x",
                ),
                (
                    f"command round trip (median of {args.round_trips})",
                    ms(m(srv_r)),
                    ms(m(clu_r)),
                    f"{m(clu_r) / m(srv_r):.2f}x",
                    ms(m(clu_r) - m(srv_r)),
                    "<= +5 ms",
                ),
            ]
        )
        print(f"placement decision (reserve a slot, median of {args.round_trips}): {ms(m(placing))}")
        print(f"host SIGKILL to its sandbox reported lost (one sample): {lost:.2f} s")
    finally:
        server.kill_all_sandboxes()
        server.stop()
        for api in cluster.apis:
            stop(api)
        stop(host.proc)
        stop(cluster.head)
        pg.stop()
        left = sweep(host.data_dir)
        subprocess.run(
            ["rm", "-rf", str(server.data_dir), str(host.data_dir), str(cluster.ray_dir)], check=False
        )
        if left:
            print(f"warning: the cluster left sandboxes behind (swept): {left}")


if __name__ == "__main__":
    main()

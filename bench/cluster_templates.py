"""Issue 16 figure for templates on shared storage: ``python -m bench.cluster_templates [--runs 5]``.

Two hosts on one machine, each with its own image store (the operator's ``base`` only), one
shared directory and one API replica (warm pools off). Each run snapshots a sandbox on host a
(1 MB written) into a new template, then times, through the replica:
- the first create from it on host a, where it was made (a local template), and
- the first create from it on host b (b drained before, a after): b adopts it from shared
  storage (copy into its store) before creating; then a second create on b (already adopted).
Each template is new, so every first create also makes its id-mapped copy, on both hosts alike.
Then, for a Dockerfile template (COPY + RUN) built on host a, the first create on host b
(adopting it) vs building the same Dockerfile (other text) on b and its first create there.
Medians and the ratios adopted / local and adopted / built there (an adoption includes
checking the copy against the published manifest); the snapshot's own time (publication
included) is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from stockade import Template

from ._common import machine, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from cluster_harness import Cluster, Host, stop, sweep  # noqa: E402
from server_harness import ADMIN_KEY, Postgres  # noqa: E402

SPEC = {"isolation": "container", "timeout": 300}
DOCKERFILE = """FROM base
COPY hello.txt /opt/hello.txt
RUN cat /opt/hello.txt > /opt/made.txt
"""


def host_of(c: httpx.Client, sandbox_id: str) -> str:
    return next(h["name"] for h in c.get("/cluster/hosts").json() if sandbox_id in h["sandboxes"])


def only(c: httpx.Client, host: str) -> None:
    """New sandboxes go to ``host``: the other one drains."""
    for name in ("a", "b"):
        r = c.post(f"/cluster/hosts/{name}/{'undrain' if name == host else 'drain'}")
        assert r.status_code == 200, r.text


def create(c: httpx.Client, template: str, host: str) -> float:
    """Seconds to create a sandbox of ``template`` (it must land on ``host``); killed after."""
    start = time.perf_counter()
    r = c.post("/sandboxes", json={**SPEC, "template": template})
    took = time.perf_counter() - start
    assert r.status_code == 201, r.text
    assert host_of(c, r.json()["id"]) == host
    assert c.delete(f"/sandboxes/{r.json()['id']}").status_code == 204
    return took


def snapshot(c: httpx.Client, name: str) -> float:
    """Seconds to snapshot a sandbox on host a with 1 MB written into a template ``name``
    (its publication to shared storage, manifest included)."""
    sandbox_id = c.post("/sandboxes", json=SPEC).json()["id"]
    r = c.post(
        f"/sandboxes/{sandbox_id}/processes", json={"cmd": "head -c 1000000 /dev/urandom > /home/user/blob"}
    )
    assert '"end"' in r.text, r.text
    start = time.perf_counter()
    r = c.post(f"/sandboxes/{sandbox_id}/snapshot", json={"name": name})
    took = time.perf_counter() - start
    assert r.status_code == 201, r.text
    assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
    return took


def build(url: str, folder: Path, name: str) -> float:
    """Seconds to build template ``name`` (COPY, then RUN over what was copied) through the
    replica at ``url``; the context's text is ``name``, so no step comes from a cache."""
    (folder / "Dockerfile").write_text(DOCKERFILE)
    (folder / "hello.txt").write_text(name)
    start = time.perf_counter()
    Template.build(str(folder / "Dockerfile"), name=name, api_url=url, api_key=ADMIN_KEY)
    return time.perf_counter() - start


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    pg = Postgres().start()
    cluster = Cluster()
    shared = Path(tempfile.mkdtemp(prefix="stockade-bench-shared-", dir="/var/tmp"))
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-context-"))
    for name in ("a", "b"):
        cluster.hosts[name] = Host(
            name, cluster.address, slots="container=4", shared_dir=shared, own_images=True
        )
    try:
        cluster.start_head()
        for host in cluster.hosts.values():
            host.start()
        cluster.start_api(pg.create_database("stockade_bench_templates"))
        snapshots, local, adopted, again = [], [], [], []
        built, built_create, adopted_build = [], [], []
        with cluster.client() as c:
            while len(c.get("/cluster/hosts").json()) < 2:
                time.sleep(0.2)
            for run in range(args.runs):
                name = f"bench-snap-{run}"
                only(c, "a")
                snapshots.append(snapshot(c, name))
                local.append(create(c, name, "a"))
                only(c, "b")
                adopted.append(create(c, name, "b"))
                again.append(create(c, name, "b"))
            for run in range(args.runs):
                # A Dockerfile template: built on a, then on b one built there (another text, so
                # no cached step) and the first create from it, vs the first create from a's.
                only(c, "a")
                build(cluster.replica_urls[0], work, f"bench-made-a-{run}")
                only(c, "b")
                built.append(build(cluster.replica_urls[0], work, f"bench-made-b-{run}"))
                built_create.append(create(c, f"bench-made-b-{run}", "b"))
                adopted_build.append(create(c, f"bench-made-a-{run}", "b"))
            only(c, "a")
            c.post("/cluster/hosts/b/undrain")
            for run in range(args.runs):
                for name in (f"bench-snap-{run}", f"bench-made-a-{run}", f"bench-made-b-{run}"):
                    assert c.delete(f"/templates/{name}").status_code == 204
            assert c.post("/templates/prune").status_code == 200
        m = statistics.median
        print(machine())
        table(
            [
                ("measure", "baseline", "adopted", "ratio", "added"),
                (
                    f"first create from a new template (1 MB snapshot; median of {args.runs}): "
                    f"baseline on the host that made it, adopted on another host",
                    ms(m(local)),
                    ms(m(adopted)),
                    f"{m(adopted) / m(local):.2f}x",
                    ms(m(adopted) - m(local)),
                ),
                (
                    f"a Dockerfile template (COPY + RUN) on a host that lacks it (median of "
                    f"{args.runs}): baseline built there + first create, adopted by the first create",
                    ms(m(built) + m(built_create)),
                    ms(m(adopted_build)),
                    f"{m(adopted_build) / (m(built) + m(built_create)):.2f}x",
                    ms(m(adopted_build) - m(built) - m(built_create)),
                ),
            ]
        )
        print(f"second create on the adopting host (median of {args.runs}): {ms(m(again))}")
        print(f"snapshot through the replica, published to shared storage (median): {ms(m(snapshots))}")
        print(f"load after the runs: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
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
                str(cluster.ray_dir),
                str(shared),
                str(work),
                *(str(h.data_dir) for h in cluster.hosts.values()),
            ],
            check=False,
        )
        if left:
            print(f"warning: the cluster left sandboxes behind (swept): {left}")


if __name__ == "__main__":
    main()

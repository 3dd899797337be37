"""Server overhead and throughput: ``python -m bench.server``.

- create (until the sandbox answers), create-to-first-output and kill through the server
  (HTTP on loopback, API key, store; uvloop as shipped) vs the engine driven in-process
  (default loop), median of ``--runs`` (20), interleaved so both see the same machine load;
- command round trip (start ``true``, read to its end) over HTTP vs the engine, median of 50;
- sandboxes created and destroyed per second by 16 concurrent clients, with p50/p99 latency.

Warm pools are off on both sides (STOCKADE_POOL_SIZE=0) so every create does the full work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


import httpx

from stockade.config import default_images_dir
from stockade.engine import Engine, EngineConfig
from stockade.models import ProcessSpec, SandboxSpec

from ._common import machine, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from server_harness import Server  # noqa: E402

N_ROUND_TRIP, CLIENTS, THROUGHPUT_TOTAL = 50, 16, 64
#: The rows of a create-to-kill cycle and the issue's goal for each.
CYCLE_ROWS = [
    ("create", "<= 5 ms added"),
    ("create-to-first-output", "<= 5 ms added"),
    ("kill", "reported"),
]


#: One create-to-kill cycle: (create, create-to-first-output, kill) in seconds.
Cycle = tuple[float, float, float]


async def engine_cycle(engine: Engine) -> Cycle:
    start = time.perf_counter()
    info = await engine.sandboxes.create(SandboxSpec())
    created = time.perf_counter()
    run = await engine.processes.start(info.id, ProcessSpec(cmd="echo hi"))
    async for event in run.events():
        if event.get("type") == "stdout":
            break
    output = time.perf_counter()
    await engine.sandboxes.kill(info.id)
    return created - start, output - start, time.perf_counter() - output


async def server_cycle(client: httpx.AsyncClient) -> Cycle:
    start = time.perf_counter()
    r = await client.post("/sandboxes", json={})
    assert r.status_code == 201, r.text
    sb = r.json()
    created = time.perf_counter()
    async with client.stream("POST", f"/sandboxes/{sb['id']}/processes", json={"cmd": "echo hi"}) as r:
        async for line in r.aiter_lines():
            if json.loads(line).get("type") == "stdout":
                break
    output = time.perf_counter()
    r = await client.delete(f"/sandboxes/{sb['id']}")
    assert r.status_code == 204, r.text
    return created - start, output - start, time.perf_counter() - output


async def engine_round_trip(engine: Engine, sandbox_id: str) -> float:
    start = time.perf_counter()
    run = await engine.processes.start(sandbox_id, ProcessSpec(argv=["true"]))
    async for _ in run.events():
        pass
    return time.perf_counter() - start


async def server_round_trip(client: httpx.AsyncClient, sandbox_id: str) -> float:
    start = time.perf_counter()
    r = await client.post(f"/sandboxes/{sandbox_id}/processes", json={"argv": ["true"]})
    assert '"end"' in r.text
    return time.perf_counter() - start


async def throughput(client: httpx.AsyncClient) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = THROUGHPUT_TOTAL

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t = time.perf_counter()
            r = await client.post("/sandboxes", json={"cpu": 0.5, "memory_mb": 256})
            assert r.status_code == 201, r.text
            await client.delete(f"/sandboxes/{r.json()['id']}")
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return THROUGHPUT_TOTAL / (time.perf_counter() - start), latencies


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


async def main(runs: int) -> None:
    os.environ["STOCKADE_POOL_SIZE"] = "0"
    engine_dir = Path(tempfile.mkdtemp(prefix="stockade-bench-engine-", dir="/var/tmp"))
    server = Server(Path(tempfile.mkdtemp(prefix="stockade-bench-srv-", dir="/var/tmp"))).start()
    try:
        config = EngineConfig(data_dir=engine_dir, images_dir=default_images_dir())
        async with (
            Engine(config) as engine,
            httpx.AsyncClient(
                base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {server.admin_key}"}
            ) as client,
        ):
            await engine_cycle(engine)  # warm both paths up
            await server_cycle(client)
            eng_c: list[Cycle] = []
            srv_c: list[Cycle] = []
            for _ in range(runs):
                eng_c.append(await engine_cycle(engine))
                srv_c.append(await server_cycle(client))
            info = await engine.sandboxes.create(SandboxSpec())
            sb = (await client.post("/sandboxes", json={})).json()
            eng_r: list[float] = []
            srv_r: list[float] = []
            for _ in range(N_ROUND_TRIP):
                eng_r.append(await engine_round_trip(engine, info.id))
                srv_r.append(await server_round_trip(client, sb["id"]))
            await engine.sandboxes.kill(info.id)
            await client.delete(f"/sandboxes/{sb['id']}")
            rate, lat = await throughput(client)
        m = statistics.median
        print(machine())
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        rows: list[tuple[str, ...]] = [("measure", "engine", "server", "added", "ratio", "target")]
        for i, (name, target) in enumerate(CYCLE_ROWS):
            eng, srv = m(c[i] for c in eng_c), m(c[i] for c in srv_c)
            rows.append(
                (f"{name} (median of {runs})", ms(eng), ms(srv), ms(srv - eng), f"{srv / eng:.2f}x", target)
            )
        eng, srv = m(eng_r), m(srv_r)
        rows.append(
            (
                f"command round trip (median of {N_ROUND_TRIP})",
                ms(eng),
                ms(srv),
                ms(srv - eng),
                f"{srv / eng:.2f}x",
                "<= 0.5 ms added",
            )
        )
        table(rows)
        q = statistics.quantiles(lat, n=100)
        print(
            f"throughput, {CLIENTS} concurrent clients, {THROUGHPUT_TOTAL} create+destroy: "
            f"{rate:.1f} sandboxes/s; latency p50 {ms(q[49])}, p99 {ms(q[98])}"
        )
    finally:
        server.kill_all_sandboxes()
        server.stop()
        subprocess.run(["rm", "-rf", str(engine_dir), str(server.data_dir)], check=False)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="create-to-kill cycles per side")
    asyncio.run(main(parser.parse_args().runs))


if __name__ == "__main__":
    run()

"""Issue 17 figures for the cold create path, interleaved with the raw runtimes in one run.

    .venv/bin/python -m bench.create_path [--runs 15] [--clients 8] [--cycles 64]

Per tier (container = runc, gvisor = runsc), medians of ``--runs``:

- raw: ``<runtime> run`` of /bin/true on the same kind of bundle the driver builds, + delete;
- driver: the runtime driver alone, broken down into create (disk, overlay, bundle), runtime
  run, agent ready (first answer), and stop + destroy;
- cold create-to-first-output through the local daemon with no warm pool (SDK
  ``Sandbox.create`` + ``commands.run("true")``), its ratio to raw, and the SDK kill time;
- creates+kills per second with ``--clients`` concurrent clients (each create runs ``true``);
- with the daemon's warm pool (floor 1): create and create-to-first-output back to back (one
  client: create with an env, run ``true``, kill, again), and the cycles per second reached.

Each raw sample is taken right before the matching driver and daemon samples, so all three see
the same machine load. Run it against two trees (PYTHONPATH) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from stockade import AsyncSandbox, Sandbox
from stockade.agent import __file__ as agent_file
from stockade.config import default_images_dir
from stockade.images import ImageStore
from stockade.runtimes.base import SandboxSpec
from stockade.runtimes.ocidriver import OciDriver
from stockade.runtimes.runc import RuncDriver
from stockade.runtimes.runsc import RunscDriver

from ._common import PrivateDaemon, machine, table

DRIVERS: dict[str, type[OciDriver]] = {"container": RuncDriver, "gvisor": RunscDriver}


class Raw:
    """The raw runtime on a bundle made by the driver, its process replaced by /bin/true
    (or ``args``)."""

    def __init__(self, driver: OciDriver, data: Path, args: tuple[str, ...] = ("/bin/true",)) -> None:
        self.driver = driver
        self.spec = SandboxSpec(id="rawbench", image="base", directory=data / "sandboxes" / "rawbench")
        asyncio.run(driver.create(self.spec))
        config_path = self.spec.directory / "bundle" / "config.json"
        config = json.loads(config_path.read_text())
        config["process"]["args"] = list(args)
        config_path.write_text(json.dumps(config))
        driver.runtime_root.mkdir(parents=True, exist_ok=True)
        self.base = [driver.binary, *driver.global_flags()]
        self.n = 0

    def once(self) -> float:
        self.n += 1
        cid = f"raw{self.n}"
        t = time.perf_counter()
        subprocess.run(
            [*self.base, "run", "--bundle", str(self.spec.directory / "bundle"), cid],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        subprocess.run([*self.base, "delete", "--force", cid], check=False)
        return time.perf_counter() - t

    def close(self) -> None:
        asyncio.run(self.driver.destroy(self.spec))


@contextlib.contextmanager
def timed_runtime_runs(driver: OciDriver) -> Iterator[list[float]]:
    """Seconds each ``<runtime> run`` the driver spawns takes, appended as they end (the
    driver's other runtime calls, state and delete, are not timed)."""
    runs: list[float] = []
    original = asyncio.create_subprocess_exec

    async def timed_exec(*argv: str, **kwargs: object) -> asyncio.subprocess.Process:
        t = time.perf_counter()
        proc = await original(*argv, **kwargs)  # type: ignore[arg-type]
        if "run" in argv and driver.binary in argv:
            wait = proc.wait

            async def timed_wait() -> int:
                code = await wait()
                runs.append(time.perf_counter() - t)
                return code

            proc.wait = timed_wait  # type: ignore[method-assign]
        return proc

    asyncio.create_subprocess_exec = timed_exec  # type: ignore[assignment]
    try:
        yield runs
    finally:
        asyncio.create_subprocess_exec = original


async def driver_once(driver: OciDriver, data: Path, n: int) -> dict[str, float]:
    """One sandbox through the driver alone, timed by phase."""
    spec = SandboxSpec(id=f"drv{n}", image="base", directory=data / "sandboxes" / f"drv{n}")
    with timed_runtime_runs(driver) as spawned:
        t0 = time.perf_counter()
        await driver.create(spec)
        t1 = time.perf_counter()
        await driver.start(spec)
        t2 = time.perf_counter()
        channel = await driver.connect(spec)
        await channel.call("hello")
        await channel.aclose()
        t3 = time.perf_counter()
        await driver.destroy(spec)
        t4 = time.perf_counter()
    run = spawned[0] if spawned else 0.0
    return {
        "create": t1 - t0,
        "runtime run": run,
        "agent ready": t2 - t1 - run,
        "first call": t3 - t2,
        "stop+destroy": t4 - t3,
        "total": t4 - t0,
    }


def daemon_once(tier: str) -> tuple[float, float]:
    t = time.perf_counter()
    sb = Sandbox.create(isolation=tier)  # type: ignore[arg-type]
    sb.commands.run("true")
    t1 = time.perf_counter()
    sb.kill()
    return t1 - t, time.perf_counter() - t1


async def throughput(tier: str, clients: int, cycles: int) -> float:
    """Creates (each running ``true``) and kills per second with ``clients`` clients."""
    left = [cycles]

    async def client() -> None:
        while left[0] > 0:
            left[0] -= 1
            sb = await AsyncSandbox.create(isolation=tier, timeout=120)  # type: ignore[arg-type]
            await sb.commands.run("true")
            await sb.kill()

    t = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return cycles / (time.perf_counter() - t)


def back_to_back(tier: str, n: int) -> tuple[float, float, float]:
    """Median create and create-to-first-output of ``n`` creates one after another (each
    sandbox killed before the next create), with the daemon's warm pool; and the cycles per
    second reached (a faster kill leaves the pool less time to refill between creates)."""
    creates, outputs = [], []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        sb = Sandbox.create(isolation=tier, envs={"RUN": "1"})
        t1 = time.perf_counter()
        sb.commands.run("true")
        creates.append(t1 - t)
        outputs.append(time.perf_counter() - t)
        sb.kill()
    return ms(creates), ms(outputs), n / (time.perf_counter() - start)


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=64)
    parser.add_argument("--tier", action="append", choices=list(DRIVERS))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    images = ImageStore(default_images_dir())
    rows: list[tuple[str, ...]] = [
        (
            "tier",
            "raw run+delete",
            "driver create",
            "runtime run",
            "agent ready",
            "first call",
            "driver stop+destroy",
            "daemon create->output",
            "ratio to raw",
            "daemon kill",
            f"creates/s ({args.clients} clients)",
        )
    ]
    with PrivateDaemon(pool_size=0):
        Sandbox.create().kill()  # warm the id-mapped image copy and the page cache
        for tier in args.tier or list(DRIVERS):
            data = Path(tempfile.mkdtemp(prefix="stockade-bench-drv-", dir="/var/tmp"))
            (data / "sandboxes").mkdir(mode=0o711)
            data.chmod(0o711)
            driver = DRIVERS[tier](data, images, Path(agent_file).parent)
            raw = Raw(driver, data)
            raw_s: list[float] = []
            phases: dict[str, list[float]] = {}
            created: list[float] = []
            killed: list[float] = []
            try:
                for n in range(args.runs + 1):
                    r = raw.once()
                    d = asyncio.run(driver_once(driver, data, n))
                    c, k = daemon_once(tier)
                    if n == 0:
                        continue  # the first of each warms caches (blank disk, page cache)
                    raw_s.append(r)
                    created.append(c)
                    killed.append(k)
                    for key, value in d.items():
                        phases.setdefault(key, []).append(value)
            finally:
                raw.close()
                shutil.rmtree(data, ignore_errors=True)
            rate = asyncio.run(throughput(tier, args.clients, args.cycles))
            rows.append(
                (
                    tier,
                    f"{ms(raw_s):.1f} ms",
                    f"{ms(phases['create']):.1f} ms",
                    f"{ms(phases['runtime run']):.1f} ms",
                    f"{ms(phases['agent ready']):.1f} ms",
                    f"{ms(phases['first call']):.1f} ms",
                    f"{ms(phases['stop+destroy']):.1f} ms",
                    f"{ms(created):.1f} ms",
                    f"{ms(created) / ms(raw_s):.2f}x",
                    f"{ms(killed):.1f} ms",
                    f"{rate:.1f}",
                )
            )
            print("  ".join(rows[-1]), flush=True)
    print()
    table(rows)
    pool_rows: list[tuple[str, ...]] = [
        ("tier", "back-to-back create (pool floor 1)", "create->output", "cycles/s")
    ]
    with PrivateDaemon(pool_size=1):
        for tier in args.tier or list(DRIVERS):
            Sandbox.create(isolation=tier).kill()
            time.sleep(2)  # the pool refilled
            create, output, rate = back_to_back(tier, args.runs * 2)
            pool_rows.append((tier, f"{create:.1f} ms", f"{output:.1f} ms", f"{rate:.1f}"))
    print()
    table(pool_rows)


if __name__ == "__main__":
    main()

"""Issue 2 figures: create-to-first-output per tier vs the raw runtime, command round trip,
host memory per idle sandbox.

    .venv/bin/python -m bench.sandbox [--runs 20] [--round-trips 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

from stockade import Sandbox
from stockade.agent import __file__ as agent_file
from stockade.images import ImageStore
from stockade.runtimes.base import SandboxSpec
from stockade.host import cgroup_pids
from stockade.runtimes.runc import RuncDriver
from stockade.runtimes.runsc import RunscDriver

from ._common import PrivateDaemon, machine, median_ms, table, timed


def raw_runtime(driver_cls: type, images: ImageStore, runs: int) -> list[float]:
    """`<runtime> run` of /bin/true on the same kind of bundle the driver builds, plus delete."""
    data = Path(tempfile.mkdtemp(prefix="stockade-raw-", dir="/var/tmp"))
    (data / "sandboxes").mkdir(mode=0o711)
    data.chmod(0o711)
    driver = driver_cls(data, images, Path(agent_file).parent)
    spec = SandboxSpec(id="rawbench", image="base", directory=data / "sandboxes" / "rawbench")
    asyncio.run(driver.create(spec))
    config_path = spec.directory / "bundle" / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["args"] = ["/bin/true"]
    config_path.write_text(json.dumps(config))
    base = [driver.binary, *driver.global_flags()]
    samples = []
    try:
        for i in range(runs):
            cid = f"raw{i}"
            t = time.perf_counter()
            subprocess.run(
                [*base, "run", "--bundle", str(spec.directory / "bundle"), cid],
                check=True,
                stdin=subprocess.DEVNULL,
            )
            subprocess.run([*base, "delete", "--force", cid], check=False)
            samples.append(time.perf_counter() - t)
    finally:
        asyncio.run(driver.destroy(spec))
        subprocess.run(["rm", "-rf", str(data)], check=False)
    return samples


def create_to_first_output(tier: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        sb = Sandbox.create(isolation=tier)  # type: ignore[arg-type]
        sb.commands.run("true")
        samples.append(time.perf_counter() - t)
        sb.kill()
    return samples


def idle_memory(tier: str, data_dir: Path, count: int = 3) -> float:
    """Mean PSS (MiB) of every host process in an idle sandbox's cgroup."""
    sandboxes = [Sandbox.create(isolation=tier) for _ in range(count)]  # type: ignore[arg-type]
    time.sleep(1)
    from stockade.host import cgroup_parent

    total = 0
    for sb in sandboxes:
        for pid in cgroup_pids(f"{cgroup_parent(data_dir)}/{sb.id}"):
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
    for sb in sandboxes:
        sb.kill()
    return total / count / (1 << 20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--round-trips", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    cold: dict[str, float] = {}
    with PrivateDaemon(pool_size=0):
        Sandbox.create().kill()  # warm the id-mapped image copy and the page cache
        for tier in ("container", "gvisor"):
            cold[tier] = median_ms(create_to_first_output(tier, args.runs))
    rows = [
        (
            "tier",
            "raw run /bin/true",
            "create+run (pool)",
            "ratio",
            "create+run (cold)",
            "ratio",
            "run('true') round trip",
            "idle PSS",
        )
    ]
    with PrivateDaemon() as daemon:
        images = ImageStore(Path(__import__("os").environ["STOCKADE_IMAGES_DIR"]))
        Sandbox.create().kill()  # warm the id-mapped image copy and the page cache
        for tier, driver in (("container", RuncDriver), ("gvisor", RunscDriver)):
            raw = median_ms(raw_runtime(driver, images, args.runs))
            create = median_ms(create_to_first_output(tier, args.runs))
            with Sandbox.create(isolation=tier) as sb:  # type: ignore[arg-type]
                sb.commands.run("true")
                n = args.round_trips if tier == "container" else max(20, args.round_trips // 4)
                rt = median_ms(timed(lambda: sb.commands.run("true"), n))
            memory = idle_memory(tier, daemon.data_dir)
            rows.append(
                (
                    tier,
                    f"{raw:.1f} ms",
                    f"{create:.1f} ms",
                    f"{create / raw:.2f}x",
                    f"{cold[tier]:.1f} ms",
                    f"{cold[tier] / raw:.2f}x",
                    f"{rt:.2f} ms",
                    f"{memory:.1f} MiB",
                )
            )
    table(rows)


if __name__ == "__main__":
    main()

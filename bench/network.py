"""Issue 6 figures: create-to-first-output with an egress policy vs without (container tier by
default, warm pool off so both sides boot a sandbox), and download throughput of one registry
file from inside a sandbox vs the host's own download of the same file, in the same run.

    .venv/bin/python -m bench.network [--creates 15] [--downloads 3] [--tiers container]
"""

from __future__ import annotations

import argparse
import re
import os
import statistics
import subprocess
import time
import urllib.request
from typing import Any

from stockade import Sandbox

from ._common import PrivateDaemon, machine, median_ms, table

REGISTRY = ["pypi.org", "files.pythonhosted.org"]
PACKAGE = "numpy"  # a wheel of ~16 MB: long enough to measure, small enough to be polite


def create_to_first(tier: str, network: Any) -> float:
    started = time.perf_counter()
    sb = Sandbox.create(isolation=tier, network=network, timeout=120)  # type: ignore[arg-type]
    try:
        assert sb.commands.run("true").exit_code == 0
        return time.perf_counter() - started
    finally:
        sb.kill()


def wheel_url() -> str:
    """A manylinux x86-64 wheel of PACKAGE from the simple index (absolute registry links)."""
    with urllib.request.urlopen(f"https://pypi.org/simple/{PACKAGE}/", timeout=30) as r:
        links = re.findall(r'href="([^"#]+)', r.read().decode())
    wheels = [u for u in links if "manylinux" in u and u.endswith("x86_64.whl")]
    return wheels[-1]


CURL = ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}"]


def host_mbit(url: str) -> float:
    out = subprocess.run([*CURL, url], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]) * 8 / 1e6


def sandbox_mbit(sb: Sandbox, url: str) -> float:
    r = sb.commands.run([*CURL, url], timeout=300)
    assert r.exit_code == 0, r.stderr
    return float(r.stdout.split()[0]) * 8 / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=15)
    parser.add_argument("--downloads", type=int, default=3)
    parser.add_argument("--tiers", default="container")
    args = parser.parse_args()
    os.environ["STOCKADE_POOL_SIZE"] = "0"
    print(machine())
    rows = [("tier", "figure", "median", "baseline", "baseline median", "difference")]
    with PrivateDaemon():
        for tier in args.tiers.split(","):
            create_to_first(tier, "none")  # warm caches
            create_to_first(tier, {"allow_out": REGISTRY})
            plain, policy = [], []
            for _ in range(args.creates):  # interleaved, so drift hits both alike
                plain.append(create_to_first(tier, "none"))
                policy.append(create_to_first(tier, {"allow_out": REGISTRY}))
            a, b = median_ms(policy), median_ms(plain)
            rows.append(
                (
                    tier,
                    f"create-to-first-output, policy, n={args.creates}",
                    f"{a:.1f} ms",
                    'network="none"',
                    f"{b:.1f} ms",
                    f"+{a - b:.1f} ms",
                )
            )
        url = wheel_url()
        host = [host_mbit(url) for _ in range(args.downloads)]
        for limit in (None, 10_000):
            network = {"allow_out": REGISTRY, **({"bandwidth_mbit": limit} if limit else {})}
            with Sandbox.create(network=network, timeout=600) as sb:
                inside = [sandbox_mbit(sb, url) for _ in range(args.downloads)]
            label = f"limit {limit} Mbit/s" if limit else "default limit"
            m, h = statistics.median(inside), statistics.median(host)
            rows.append(
                (
                    "container",
                    f"registry download, {label}, n={args.downloads}",
                    f"{m:.0f} Mbit/s",
                    "host's own download",
                    f"{h:.0f} Mbit/s",
                    f"x{m / h:.2f}",
                )
            )
    table(rows)
    print(f"file: {url}")


if __name__ == "__main__":
    main()

"""Issue 7 load figures: N concurrent clients creating, using and killing sandboxes for a fixed
time on a private daemon (loopback only), per tier; p50/p99 of each operation, sandboxes per
second, peak live sandboxes, quota refusals, errors and leaks. Baseline in the same run: one
client alone, so the ratios show what concurrency costs.

    .venv/bin/python -m bench.load [--clients 8] [--seconds 30] [--tier container --tier gvisor]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stockade.security import TIERS
from stockade.security.load import LoadResult, run_load

from ._common import PrivateDaemon, machine, table


def _row(r: LoadResult, base: LoadResult) -> tuple[str, ...]:
    def pair(op: str) -> str:
        return f"{r.percentile_ms(op, 50):.0f}/{r.percentile_ms(op, 99):.0f}"

    ratio = r.percentile_ms("cycle", 50) / base.percentile_ms("cycle", 50)
    return (
        r.tier,
        str(r.clients),
        f"{r.sandboxes_per_second:.2f}",
        str(r.peak_concurrent),
        pair("create"),
        pair("exec"),
        pair("kill"),
        pair("cycle"),
        f"{ratio:.2f}x",
        str(r.refusals),
        str(len(r.errors)),
        str(len(r.leaks)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--tier", action="append", choices=TIERS)
    args = parser.parse_args()
    print(machine())
    rows = [
        (
            "tier",
            "clients",
            "sandboxes/s",
            "peak live",
            "create p50/p99 ms",
            "exec p50/p99",
            "kill p50/p99",
            "cycle p50/p99",
            "cycle vs 1 client",
            "refused",
            "errors",
            "leaks",
        )
    ]
    with PrivateDaemon() as daemon:
        data_dir = Path(daemon.data_dir)
        for tier in args.tier or TIERS:
            base = run_load(tier, data_dir, clients=1, seconds=args.seconds / 3)
            loaded = run_load(tier, data_dir, clients=args.clients, seconds=args.seconds)
            rows += [_row(base, base), _row(loaded, base)]
            for error in loaded.errors[:5]:
                print("error:", error)
    table(rows)


if __name__ == "__main__":
    main()

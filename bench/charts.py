"""What structured chart data costs: run_code of a plotted figure with the chart formatter on
against the same cell with it off (PNG only), interleaved in one warm context, container tier.

    .venv/bin/python -m bench.charts [--runs 20]
"""

from __future__ import annotations

import argparse
import time

from stockade import Sandbox

from ._common import PrivateDaemon, machine, median_ms, table

FORMATTER = "get_ipython().display_formatter.formatters['application/vnd.stockade.chart+json']"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(machine())
    rows = [("figure", "with chart ms", "PNG only ms", "ratio")]
    with PrivateDaemon(), Sandbox.create("code-interpreter", timeout=900, memory_mb=1024) as sb:
        sb.run_code(f"import matplotlib.pyplot as plt\nformatter = {FORMATTER}")
        for points in (10, 10_000, 100_000):
            cell = f"plt.plot(range({points})); plt.show()"
            samples: dict[bool, list[float]] = {True: [], False: []}
            for enabled in (True, False) * args.runs:
                sb.run_code(f"formatter.enabled = {enabled}")
                started = time.perf_counter()
                result = sb.run_code(cell).results[0]
                samples[enabled].append(time.perf_counter() - started)
                assert (result.chart is not None) == enabled and result.png
            on, off = median_ms(samples[True]), median_ms(samples[False])
            rows.append(
                (f"line of {points} points, n={args.runs}", f"{on:.1f}", f"{off:.1f}", f"{on / off:.2f}")
            )
            print(*rows[-1], sep="  ", flush=True)
    table(rows)


if __name__ == "__main__":
    main()

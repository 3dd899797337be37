"""E2B adapter overhead: ``python -m bench.e2b [--creates 15] [--round-trips 50]``.

Against one `stockade serve` (loopback, API key, SQLite store, warm pools off), interleaved so
both clients see the same machine load:
- create-to-first-output: ``Sandbox.create()`` then ``commands.run("echo hi")``, through the
  unmodified E2B SDK (``/e2b``) and through Stockade's own SDK;
- command round trip: ``commands.run("true")`` on one sandbox each.
Prints medians and the E2B/native ratio (goal in issue 14: at most 1.2x).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

from ._common import machine, median_ms, table, timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from server_harness import Server, finish, new_data_dir  # noqa: E402


def first_output(create: Callable[[], object]) -> float:
    start = time.perf_counter()
    sb = create()
    sb.commands.run("echo hi")  # type: ignore[attr-defined]
    took = time.perf_counter() - start
    sb.kill()  # type: ignore[attr-defined]
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=15)
    parser.add_argument("--round-trips", type=int, default=50)
    args = parser.parse_args()
    server = Server(new_data_dir()).start()
    try:
        key = server.new_key("bench")
        os.environ.update(
            E2B_API_URL=server.url + "/e2b",
            E2B_SANDBOX_URL=server.url + "/e2b",
            E2B_API_KEY=key,
            STOCKADE_API_URL=server.url,
            STOCKADE_API_KEY=key,
        )
        import e2b

        import stockade

        creates: dict[str, list[float]] = {"e2b": [], "native": []}
        for _ in range(args.creates):
            creates["e2b"].append(first_output(e2b.Sandbox.create))
            creates["native"].append(first_output(stockade.Sandbox.create))
        e2b_sb, native_sb = e2b.Sandbox.create(), stockade.Sandbox.create()
        trips: dict[str, list[float]] = {"e2b": [], "native": []}
        for _ in range(args.round_trips):
            trips["e2b"] += timed(lambda: e2b_sb.commands.run("true"), 1)
            trips["native"] += timed(lambda: native_sb.commands.run("true"), 1)
        e2b_sb.kill()
        native_sb.kill()
    finally:
        finish(server)
    print(machine())
    rows = [("figure", "E2B SDK ms", "Stockade SDK ms", "ratio")]
    for name, samples in (("create-to-first-output", creates), ("command round trip", trips)):
        e, n = median_ms(samples["e2b"]), median_ms(samples["native"])
        rows.append((name, f"{e:.1f}", f"{n:.1f}", f"{e / n:.2f}x"))
    table(rows)


if __name__ == "__main__":
    main()

"""Issue 15 figure: the Daytona SDK against Stockade vs Stockade's own SDK, same server, same run.

    .venv/bin/python -m bench.daytona [--runs 10] [--round-trips 100]

- create-to-started: ``Daytona.create()`` vs ``Sandbox.create(persistence="workspace",
  on_timeout="stop")`` (what the Daytona front end asks for), then delete, interleaved;
- execute round trip: ``sandbox.process.exec("true")`` vs ``sb.commands.run("true")`` on one
  sandbox each, interleaved.

Warm pools are off (the test harness's server), so every create does the full work. Goal: the
Daytona path within 1.2x of the native one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stockade import Sandbox

from ._common import machine, median_ms, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from server_harness import Server, finish, new_data_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--round-trips", type=int, default=100)
    args = parser.parse_args()
    from daytona import Daytona, DaytonaConfig

    server = Server(new_data_dir()).start()
    try:
        key = server.new_key("bench")
        daytona = Daytona(DaytonaConfig(api_key=key, api_url=f"{server.url}/daytona/api"))
        native = {"api_url": server.url, "api_key": key}
        create_d, create_n = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            sb = daytona.create()
            create_d.append(time.perf_counter() - t)
            daytona.delete(sb)
            t = time.perf_counter()
            nb = Sandbox.create(persistence="workspace", on_timeout="stop", **native)
            create_n.append(time.perf_counter() - t)
            nb.kill()
        sb = daytona.create()
        nb = Sandbox.create(persistence="workspace", on_timeout="stop", **native)
        exec_d, exec_n = [], []
        for _ in range(args.round_trips):
            t = time.perf_counter()
            sb.process.exec("true")
            exec_d.append(time.perf_counter() - t)
            t = time.perf_counter()
            nb.commands.run("true")
            exec_n.append(time.perf_counter() - t)
        daytona.delete(sb)
        nb.kill()
    finally:
        finish(server)
    print(machine())
    rows = [("figure", "daytona SDK ms", "stockade SDK ms", "ratio")]
    for name, d, n in (("create-to-started", create_d, create_n), ("execute round trip", exec_d, exec_n)):
        rows.append(
            (name, f"{median_ms(d):.1f}", f"{median_ms(n):.1f}", f"{median_ms(d) / median_ms(n):.2f}x")
        )
    table(rows)


if __name__ == "__main__":
    main()

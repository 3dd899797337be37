"""Issue 4 figures: run_code("1+1") round trip in a warm context, and the time from
Sandbox.create(template="code-interpreter") to the first result, per tier, each against a
baseline measured in the same run (a command round trip; create-to-first-output of `true`).

    .venv/bin/python -m bench.code_interpreter [--round-trips 200] [--creates 5]
"""

from __future__ import annotations

import argparse
import time

from stockade import Sandbox

from ._common import PrivateDaemon, machine, median_ms, table, timed

TEMPLATE = "code-interpreter"


def create_to_first(template: str | None, tier: str, first: str) -> float:
    started = time.perf_counter()
    sb = Sandbox.create(template, isolation=tier, timeout=600, memory_mb=1024)  # type: ignore[arg-type]
    try:
        if first == "code":
            assert sb.run_code("1+1").text == "2"
        else:
            assert sb.commands.run("true").exit_code == 0
        return time.perf_counter() - started
    finally:
        sb.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--creates", type=int, default=5)
    parser.add_argument("--tiers", default="container,gvisor")
    args = parser.parse_args()
    print(machine())
    rows = [("tier", "figure", "median ms", "baseline", "baseline ms", "ratio")]
    print(*rows[0], sep="  ", flush=True)
    with PrivateDaemon():
        for tier in args.tiers.split(","):
            n = args.round_trips if tier == "container" else max(20, args.round_trips // 4)
            with Sandbox.create(
                TEMPLATE,
                isolation=tier,
                timeout=900,  # type: ignore[arg-type]
                memory_mb=1024,
            ) as sb:
                sb.run_code("1+1")
                sb.run_code("true", language="bash")
                code = median_ms(timed(lambda: sb.run_code("1+1"), n))
                bash = median_ms(timed(lambda: sb.run_code("true", language="bash"), n))
            # The baseline runs in a plain sandbox of its own, away from the kernel's background work.
            with Sandbox.create(isolation=tier, timeout=900) as plain_sb:  # type: ignore[arg-type]
                command = median_ms(timed(lambda: plain_sb.commands.run("true"), n))
            rows.append(
                (
                    tier,
                    f'run_code("1+1"), warm, n={n}',
                    f"{code:.1f}",
                    "commands.run('true')",
                    f"{command:.1f}",
                    f"{code / command:.2f}",
                )
            )
            rows.append(
                (
                    tier,
                    f"bash context `true`, warm, n={n}",
                    f"{bash:.1f}",
                    "commands.run('true')",
                    f"{command:.1f}",
                    f"{bash / command:.2f}",
                )
            )
            print(*rows[-2], sep="  ", flush=True)
            creates = args.creates if tier == "container" else max(2, args.creates // 2)
            create_to_first(TEMPLATE, tier, "code")  # warm the page cache and id-mapped copy
            first = median_ms([create_to_first(TEMPLATE, tier, "code") for _ in range(creates)])
            plain = median_ms([create_to_first(None, tier, "command") for _ in range(creates)])
            rows.append(
                (
                    tier,
                    f"create -> first result, n={creates}",
                    f"{first:.0f}",
                    "create -> `true` (base)",
                    f"{plain:.0f}",
                    f"{first / plain:.1f}",
                )
            )
            print(*rows[-1], sep="  ", flush=True)
    print()
    table(rows)


if __name__ == "__main__":
    main()

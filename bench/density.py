"""Issue 17 density: hold N idle sandboxes live at once, per tier; report host memory per idle
sandbox, create time and command round trip at each step, and whether all N could be made.

    .venv/bin/python -m bench.density [--container 250] [--gvisor 60] [--step 50] [--clients 4]

Memory per sandbox is the PSS of every host process in its cgroup (runc: the agent; gVisor:
Sentry, gofer and stubs) and the cgroup's own charge (which adds the page cache of what it
wrote), each the mean over the live sandboxes; host tasks (threads) per sandbox count against
the kernel's ``pid_max``. A private daemon with no warm pool; loopback
only. Before issue 17, the 201st container sandbox failed ("unable to create session key: disk
quota exceeded", the kernel's per-uid key quota).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from stockade import AsyncSandbox
from stockade.host import cgroup_parent, cgroup_pids, cgroup_stats

from ._common import PrivateDaemon, machine, table


def _pss(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _tasks(pids: set[int]) -> int:
    """Threads of ``pids``: each takes a pid of the host's ``kernel.pid_max``."""
    total = 0
    for pid in pids:
        try:
            total += len(list(Path(f"/proc/{pid}/task").iterdir()))
        except OSError:
            continue
    return total


def per_sandbox(data_dir: Path, ids: list[str]) -> tuple[float, float, float]:
    """Mean PSS (MiB), cgroup charge (MiB) and host tasks of the sandboxes ``ids``."""
    parent = cgroup_parent(data_dir)
    pids = [cgroup_pids(f"{parent}/{i}") for i in ids]
    charge = [cgroup_stats(f"{parent}/{i}").memory_bytes for i in ids]
    mib = float(1 << 20)
    return (
        statistics.mean(map(_pss, pids)) / mib,
        statistics.mean(charge) / mib,
        statistics.mean(map(_tasks, pids)),
    )


async def _round_trip(sb: AsyncSandbox, n: int = 10) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await sb.commands.run("true")
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


async def fill(
    tier: str, target: int, step: int, clients: int, data_dir: Path, rows: list[tuple[str, ...]]
) -> tuple[int, str]:
    """Create sandboxes in steps up to ``target``; return how many lived and the first error."""
    live: list[AsyncSandbox] = []
    error = ""
    try:
        while len(live) < target and not error:
            goal = min(target, len(live) + step)
            times: list[float] = []

            async def one() -> None:
                nonlocal error
                while len(live) + clients_busy[0] < goal and not error:
                    clients_busy[0] += 1
                    t = time.perf_counter()
                    try:
                        sb = await AsyncSandbox.create(isolation=tier, timeout=1800)  # type: ignore[arg-type]
                        live.append(sb)
                        times.append(time.perf_counter() - t)
                    except Exception as exc:  # noqa: BLE001 - the figure is where it fails
                        error = error or f"at sandbox {len(live) + 1}: {exc}"[:300]
                    finally:
                        clients_busy[0] -= 1

            clients_busy = [0]
            await asyncio.gather(*(one() for _ in range(clients)))
            await asyncio.sleep(1)  # let the newest agents settle to idle
            pss, charge, tasks = per_sandbox(data_dir, [sb.sandbox_id for sb in live])
            rt = await _round_trip(live[-1]) if live else 0.0
            first = await _round_trip(live[0]) if live else 0.0
            rows.append(
                (
                    tier,
                    str(len(live)),
                    f"{statistics.median(times) * 1000:.0f} ms" if times else "-",
                    f"{first:.1f} / {rt:.1f} ms",
                    f"{pss:.1f} MiB",
                    f"{charge:.1f} MiB",
                    f"{tasks:.0f}",
                )
            )
            print("  ".join(rows[-1]), flush=True)
    finally:
        reached = len(live)
        for i in range(0, len(live), 16):
            await asyncio.gather(*(sb.kill() for sb in live[i : i + 16]), return_exceptions=True)
    return reached, error


async def run(args: argparse.Namespace, data_dir: Path) -> None:
    rows: list[tuple[str, ...]] = [
        (
            "tier",
            "live",
            "create p50",
            "round trip oldest / newest",
            "PSS per sandbox",
            "cgroup charge per sandbox",
            "host tasks per sandbox",
        )
    ]
    results = []
    for tier, target in (("container", args.container), ("gvisor", args.gvisor)):
        if target > 0:
            reached, error = await fill(tier, target, args.step, args.clients, data_dir, rows)
            results.append(
                f"{tier}: {reached} of {target} live sandboxes "
                f"{'(all made)' if reached == target else 'FAILED ' + error}"
            )
    print()
    table(rows)
    print(*results, sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--container", type=int, default=250)
    parser.add_argument("--gvisor", type=int, default=60)
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with PrivateDaemon(pool_size=0) as daemon:
        asyncio.run(run(args, Path(daemon.data_dir)))


if __name__ == "__main__":
    main()

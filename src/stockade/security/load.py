"""Load: N concurrent clients create, use and kill sandboxes for a fixed time (loopback only).

Every client loops: create a sandbox, run a command, write and read a file, kill it. Quota
refusals are counted apart (they are a correct answer under load); any other error is a failure.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from .. import AsyncSandbox, QuotaExceededError, StockadeError
from ..models import Isolation
from .runner import settled_leaks

OPERATIONS = ("create", "exec", "write", "read", "kill", "cycle")


@dataclass
class LoadResult:
    """What a load run did and how long each operation took."""

    tier: str
    clients: int
    seconds: float
    cycles: int = 0
    refusals: int = 0
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    peak_concurrent: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPERATIONS})

    @property
    def sandboxes_per_second(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    def percentile_ms(self, op: str, q: float) -> float:
        samples = sorted(self.latencies[op])
        if not samples:
            return float("nan")
        if q == 50:
            return statistics.median(samples) * 1e3
        return samples[min(len(samples) - 1, int(len(samples) * q / 100))] * 1e3


async def _client(
    tier: str,
    data_dir: Path,
    deadline: float,
    max_cycles: int,
    result: LoadResult,
    live: list[int],
    made: list[str],
) -> None:
    lat = result.latencies
    for _ in range(max_cycles):
        if time.monotonic() >= deadline:
            return
        start = time.perf_counter()
        try:
            sb = await AsyncSandbox.create(isolation=cast(Isolation, tier), timeout=120, data_dir=data_dir)
        except QuotaExceededError:
            result.refusals += 1
            await asyncio.sleep(0.2)
            continue
        except StockadeError as exc:
            result.errors.append(f"create: {type(exc).__name__}: {exc}")
            continue
        made.append(sb.id)
        live[0] += 1
        result.peak_concurrent = max(result.peak_concurrent, live[0])
        lat["create"].append(time.perf_counter() - start)
        try:
            for op, call in (
                ("exec", lambda: sb.commands.run("echo load", timeout=30)),
                ("write", lambda: sb.files.write("/home/user/load.txt", b"x" * 4096)),
                ("read", lambda: sb.files.read("/home/user/load.txt", format="bytes")),
            ):
                t = time.perf_counter()
                await call()
                lat[op].append(time.perf_counter() - t)
        except StockadeError as exc:
            result.errors.append(f"{sb.id}: {type(exc).__name__}: {exc}")
        finally:
            t = time.perf_counter()
            try:
                await sb.kill()
            except StockadeError as exc:
                result.errors.append(f"kill {sb.id}: {exc}")
            live[0] -= 1
            lat["kill"].append(time.perf_counter() - t)
        lat["cycle"].append(time.perf_counter() - start)
        result.cycles += 1


async def _run(tier: str, data_dir: Path, clients: int, seconds: float, max_cycles: int) -> LoadResult:
    result = LoadResult(tier, clients, seconds)
    live, made = [0], []  # type: list[int], list[str]
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(_client(tier, data_dir, deadline, max_cycles, result, live, made) for _ in range(clients))
    )
    result.seconds = time.monotonic() - started
    result.leaks = [leak for sid in made for leak in settled_leaks(data_dir, sid)]
    return result


def run_load(
    tier: str, data_dir: Path, clients: int = 8, seconds: float = 20.0, max_cycles: int = 1000
) -> LoadResult:
    """Run ``clients`` concurrent clients against the daemon of ``data_dir`` for ``seconds``
    (each stops after ``max_cycles`` sandboxes at most)."""
    return asyncio.run(_run(tier, data_dir, clients, seconds, max_cycles))

"""Helpers shared by the benchmarks: a private daemon, medians, the machine line."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from stockade.config import default_images_dir


def machine() -> str:
    cpu = "unknown cpu"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.node()}: {os.cpu_count()} cores ({cpu}), kernel {platform.release()}, "
        f"python {platform.python_version()}"
    )


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


class PrivateDaemon:
    """A daemon on a throwaway data dir sharing the installed images; stopped by pid."""

    def __init__(self, pool_size: int | None = None) -> None:
        self.pool_size = pool_size  # None: whatever $STOCKADE_POOL_SIZE says (default 1)

    def __enter__(self) -> "PrivateDaemon":
        self.data_dir = Path(tempfile.mkdtemp(prefix="stockade-bench-", dir="/var/tmp"))
        os.environ["STOCKADE_DATA_DIR"] = str(self.data_dir)
        os.environ.setdefault("STOCKADE_IMAGES_DIR", str(default_images_dir(Path("/var/lib/stockade"))))
        log = open(self.data_dir / "daemon.log", "ab")
        env = dict(os.environ)
        if self.pool_size is not None:
            env["STOCKADE_POOL_SIZE"] = str(self.pool_size)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockade.server", "--data-dir", str(self.data_dir)],
            stdout=log,
            stderr=log,
            env=env,
        )
        sock = self.data_dir / "private" / "stockade.sock"
        for _ in range(600):
            if sock.exists():
                break
            time.sleep(0.05)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        from stockade import Sandbox

        for info in Sandbox.list():
            Sandbox.connect(info.id).kill()
        self.proc.terminate()
        self.proc.wait(30)
        subprocess.run(["rm", "-rf", str(self.data_dir)], check=False)


def table(rows: Iterator[tuple[str, ...]] | list[tuple[str, ...]]) -> None:
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))

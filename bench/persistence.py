"""Issue 5 figures: pause and resume of a sandbox holding a 200 MB Python process (gVisor
checkpoint to disk; container freezer), create-from-template latency for a snapshot
template with 500 MB of extra files vs the base template, and archive / restore-from-archive of
a workspace holding 200 MB of mixed files vs a plain stop / start.

    .venv/bin/python -m bench.persistence [--runs 10] [--templates-only | --archive-only]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
from pathlib import Path

from stockade import Sandbox
from stockade.images import ImageStore

from ._common import PrivateDaemon, machine, median_ms, table

#: Holds 200 MB of incompressible data, and answers each stdin line with a checksum of it.
HOLDER = (
    "import random, sys, zlib\n"
    "data = random.randbytes(200 << 20)\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    print(zlib.crc32(data), flush=True)\n"
)
#: Seconds between pause and resume: gVisor's runtime leftovers are released (~1.5 s, by
#: runsc delete) after pause returns, and a resume sooner than that waits for it.
SETTLE = 3.0
#: Not the warm pool's default limits, so base and snapshot creates take the same path.
LIMITS = {"memory_mb": 1024}


def pause_resume(tier: str, runs: int, big: bool) -> tuple[list[float], list[float]]:
    pauses, resumes = [], []
    with Sandbox.create(isolation=tier, timeout=1800, **LIMITS) as sb:  # type: ignore[arg-type]
        if big:
            sb.files.write("/home/user/holder.py", HOLDER)
            lines: list[str] = []
            handle = sb.commands.run(
                "python3 /home/user/holder.py",
                background=True,
                stdin=True,
                on_stdout=lines.append,
                timeout=None,
            )
            while not any("ready" in x for x in lines):
                time.sleep(0.05)
            handle.disconnect()
        for _ in range(runs):
            t = time.perf_counter()
            sb.pause()
            pauses.append(time.perf_counter() - t)
            time.sleep(SETTLE)
            t = time.perf_counter()
            sb.resume()
            resumes.append(time.perf_counter() - t)
        if big:  # the process and its memory are still there
            assert handle.pid in [p.pid for p in sb.commands.list()]
    return pauses, resumes


def create_once(tier: str, template: str) -> float:
    t = time.perf_counter()
    sb = Sandbox.create(template, isolation=tier, **LIMITS)  # type: ignore[arg-type]
    sb.commands.run("true")
    took = time.perf_counter() - t
    sb.kill()
    return took


def create_latency(tier: str, templates: tuple[str, str], runs: int) -> tuple[list[float], ...]:
    """Create-to-first-output for each template, alternating so load drift hits both alike."""
    samples: tuple[list[float], ...] = ([], [])
    for _ in range(runs):
        for i, template in enumerate(templates):
            samples[i].append(create_once(tier, template))
    return samples


def big_template(name: str) -> float:
    """A snapshot of base plus 500 MB of files; returns the seconds the snapshot took."""
    with Sandbox.create(isolation="container", disk_mb=2048, timeout=1800) as sb:
        sb.commands.run(
            "mkdir -p /opt/data && for i in $(seq 50); do "
            "head -c 10485760 /dev/urandom > /opt/data/f$i; done",
            user="root",
            check=True,
            timeout=600,
        )
        t = time.perf_counter()
        sb.snapshot(name)
        return time.perf_counter() - t


#: About 200 MB of mixed files: random bytes, text, and many small files (Python's library).
MIXED = (
    "set -e; mkdir -p /home/user/w && cd /home/user/w; head -c 60M /dev/urandom > random.bin;"
    " seq 1 5000000 > numbers.txt; base64 -w 76 random.bin | head -c 20M > text.b64;"
    " for i in 1 2; do mkdir -p lib$i && cp -r /usr/lib/python3* lib$i/; done; du -sm ."
)


def archive_cycle(tier: str, runs: int) -> list[tuple[str, ...]]:
    """Per run: stop, start (the baseline), stop, archive, start (restore + boot)."""
    data_dir = Path(os.environ["STOCKADE_DATA_DIR"])
    stops, starts, archives, restores, stored, archived = [], [], [], [], [], []
    with Sandbox.create(
        isolation=tier,
        persistence="workspace",
        timeout=3600,  # type: ignore[arg-type]
        **LIMITS,
    ) as sb:
        written = sb.commands.run(MIXED, check=True, timeout=600).stdout.split()[0]
        directory = data_dir / "sandboxes" / sb.id
        for _ in range(runs):
            stops.append(_timed(sb.stop))
            starts.append(_timed(sb.start))
            sb.stop()
            stored.append((directory / "disk.img").stat().st_blocks * 512)
            archives.append(_timed(sb.archive))
            archived.append((directory / "layer.tar.lz4").stat().st_size)
            restores.append(_timed(sb.start))
        check = sb.commands.run("cd /home/user/w && du -sm . | cut -f1", check=True)
        assert check.stdout.split()[0] == written, "the workspace changed across archives"
    layer, packed = statistics.median(stored), statistics.median(archived)
    start = median_ms(starts)
    return [
        (
            tier,
            f"{written} MB",
            f"{median_ms(stops):.0f} ms",
            f"{start:.0f} ms",
            f"{median_ms(archives):.0f} ms",
            f"{median_ms(restores):.0f} ms",
            f"{median_ms(restores) / start:.2f}x",
            f"{layer / 2**20:.0f} -> {packed / 2**20:.0f} MiB ({packed / layer:.2f})",
        )
    ]


def _timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--templates-only", action="store_true")
    parser.add_argument("--archive-only", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with PrivateDaemon():
        if not args.templates_only:
            rows = [
                (
                    "tier",
                    "workspace",
                    "stop",
                    "start (baseline)",
                    "archive",
                    "start from archive",
                    "ratio",
                    "layer on disk -> archive",
                )
            ]
            for tier in ("container", "gvisor"):
                rows += archive_cycle(tier, max(1, args.runs // 2))
            table(rows)
            print()
        if args.archive_only:
            return
        rows = [("tier", "process", "pause (median)", "resume (median)")]
        for tier in () if args.templates_only else ("gvisor", "container"):
            for big in (False, True):
                p, r = pause_resume(tier, args.runs, big)
                rows.append(
                    (
                        tier,
                        "200 MB python" if big else "idle",
                        f"{median_ms(p):.0f} ms",
                        f"{median_ms(r):.0f} ms",
                    )
                )
        if len(rows) > 1:
            table(rows)
            print()

        store = ImageStore(Path(os.environ["STOCKADE_IMAGES_DIR"]))
        name = f"bench-big-{secrets.token_hex(3)}"
        try:
            took = big_template(name)
            size = store.get(name).size_bytes / (1 << 20)
            print(f"snapshot of 500 MB of new files: {took:.1f} s, template layer {size:.0f} MiB")
            rows = [("tier", "base", f"{name} (+500 MB)", "ratio", "first create (+id-map)")]
            for tier in ("container", "gvisor"):
                first = create_once(tier, name)  # makes the id-mapped copy (container)
                create_once(tier, "base")
                base_samples, snap_samples = create_latency(tier, ("base", name), args.runs)
                base, snap = median_ms(base_samples), median_ms(snap_samples)
                rows.append(
                    (
                        tier,
                        f"{base:.0f} ms",
                        f"{snap:.0f} ms",
                        f"{snap / base:.2f}x",
                        f"{first * 1000:.0f} ms",
                    )
                )
            table(rows)
        finally:
            if store.exists(name):
                store.remove(name)


if __name__ == "__main__":
    main()

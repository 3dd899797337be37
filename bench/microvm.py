"""MicroVM figures: cold boot and snapshot restore to agent-ready vs a raw QEMU boot to init,
pause/resume through QEMU migration to a file, command round trip, memory.

Run as root after scripts/install:
``.venv/bin/python -m bench.microvm [--boots 10] [--calls 100] [--pauses 10]``.
Drives the QEMU driver in-process (no HTTP), on a private data directory. The accelerator is
chosen as the engine would (``STOCKADE_MICROVM_ACCEL``) and printed next to every figure.
Cold boots run with ``STOCKADE_MICROVM_SNAPSHOT=0``; the snapshot figures time creates after the
template exists (its one-off build is printed separately).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import stockade.agent
from stockade.config import default_images_dir
from stockade.images import ImageStore, guest
from stockade import host
from stockade.runtimes.base import SandboxSpec
from stockade.runtimes.qemu import QEMU, QemuDriver
from stockade.runtimes.qemu_accel import Accelerator

AGENT_DIR = Path(stockade.agent.__file__).parent


async def raw_boot(accel: Accelerator, vmlinux: Path, initrd: Path) -> float:
    """Seconds from starting QEMU to the guest's /init printing its marker (no jail, no disks)."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        QEMU,
        "-M",
        "microvm",
        *accel.qemu_args,
        "-m",
        "512",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(vmlinux),
        "-initrd",
        str(initrd),
        "-append",
        " ".join(["console=ttyS0", "quiet", "panic=-1", "reboot=t", *accel.kernel_args, "stockade.probe=1"]),
        "-serial",
        "stdio",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen = b""
    elapsed = None
    while elapsed is None and (chunk := await proc.stdout.read(4096)):
        seen += chunk
        if guest.PROBE_OK.encode() in seen:
            elapsed = time.monotonic() - start
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
    if elapsed is None:
        raise RuntimeError(f"the raw guest never reached init: {seen[-500:]!r}")
    return elapsed


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def round_trip(driver: QemuDriver, spec: SandboxSpec, calls: int) -> list[float]:
    """Seconds per ``true`` run through the agent, start to exit status."""
    channel = await driver.connect(spec)
    times = []
    try:
        for _ in range(calls):
            t = time.monotonic()
            await (await channel.open("process.start", {"argv": ["true"]})).result()
            times.append(time.monotonic() - t)
    finally:
        await channel.aclose()
    return times


def idle_memory(driver: QemuDriver, spec: SandboxSpec) -> int:
    return sum(rss_bytes(p) for p in host.cgroup_pids(driver.cgroup(spec)))


async def snapshot_starts(
    driver: QemuDriver, data_dir: Path, boots: int
) -> tuple[float, list[float], list[int]]:
    """Seconds of the first create (which builds the template), then of ``boots`` creates
    restored from it, to agent-ready; and the idle QEMU RSS of each."""
    os.environ["STOCKADE_MICROVM_SNAPSHOT"] = "1"
    ready, rss = [], []
    first = 0.0
    for i in range(boots + 1):
        spec = SandboxSpec(id=f"sbsnap{i}", image="base", directory=data_dir / "sandboxes" / f"sbsnap{i}")
        start = time.monotonic()
        try:
            await driver.create(spec)
            await driver.start(spec)
            elapsed = time.monotonic() - start
            if i == 0:
                first = elapsed
                continue
            ready.append(elapsed)
            await asyncio.sleep(2)  # idle
            rss.append(idle_memory(driver, spec))
        finally:
            await driver.destroy(spec)
        print(f"  snapshot start {i}/{boots}: agent-ready {elapsed:.2f} s")
    return first, ready, rss


async def pause_resume(
    driver: QemuDriver, data_dir: Path, pauses: int
) -> tuple[list[float], list[float], list[int]]:
    """Seconds to checkpoint (memory in a file; QEMU is then killed) and to restore (agent
    answering), ``pauses`` times on one sandbox; and the size of each saved memory."""
    spec = SandboxSpec(id="sbpause", image="base", directory=data_dir / "sandboxes" / "sbpause")
    image = spec.directory / "checkpoint"
    saves, restores, sizes = [], [], []
    try:
        await driver.create(spec)
        await driver.start(spec)
        for i in range(pauses):
            t = time.monotonic()
            await driver.checkpoint(spec, image)
            saves.append(time.monotonic() - t)
            await driver.stop(spec)  # the engine releases QEMU after pause has returned
            sizes.append(sum(f.stat().st_size for f in image.iterdir()))
            t = time.monotonic()
            await driver.restore(spec, image)
            restores.append(time.monotonic() - t)
            shutil.rmtree(image)
            print(f"  pause {i + 1}/{pauses}: {saves[-1]:.2f} s, resume {restores[-1]:.2f} s")
    finally:
        await driver.destroy(spec)
    return saves, restores, sizes


async def main(boots: int, calls: int, pauses: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-bench-microvm-", dir="/var/tmp"))
    driver = QemuDriver(data_dir, ImageStore(default_images_dir()), AGENT_DIR)
    accel = await driver.accelerator()
    vmlinux = guest.load_kernel(driver.images.root).vmlinux
    initrd = guest.initramfs(driver.images.root, AGENT_DIR)
    tag = f"[{accel.name}]"
    print(f"accelerator: {accel.name} ({accel.reason})")
    raw, ready, rss, cgroup_mem = [], [], [], []
    round_trips: list[float] = []
    try:
        os.environ["STOCKADE_MICROVM_SNAPSHOT"] = "0"
        for i in range(boots):
            raw.append(await raw_boot(accel, vmlinux, initrd))
            spec = SandboxSpec(
                id=f"sbbench{i}", image="base", directory=data_dir / "sandboxes" / f"sbbench{i}"
            )
            start = time.monotonic()
            try:
                await driver.create(spec)
                await driver.start(spec)
                ready.append(time.monotonic() - start)
                if i == 0:
                    round_trips = await round_trip(driver, spec, calls)
                await asyncio.sleep(2)  # idle
                rss.append(idle_memory(driver, spec))
                cgroup_mem.append((await driver.stats(spec)).memory_bytes)
            finally:
                await driver.destroy(spec)
            print(f"  boot {i + 1}/{boots}: raw {raw[-1]:.2f} s, agent-ready {ready[-1]:.2f} s")
        first, restored, restored_rss = await snapshot_starts(driver, data_dir, boots)
        saves, resumes, sizes = await pause_resume(driver, data_dir, pauses)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    med = statistics.median
    print(f"{tag} raw QEMU boot to init (kernel+initramfs, no disks), median of {boots}: {med(raw):.2f} s")
    print(
        f"{tag} create + cold boot to agent-ready (jailed), median of {boots}: "
        f"{med(ready):.2f} s ({med(ready) / med(raw):.1f}x the raw boot)"
    )
    print(
        f"{tag} create + snapshot restore to agent-ready (identity renewed), median of "
        f"{boots}: {med(restored):.2f} s ({med(restored) / med(raw):.2f}x the raw boot, "
        f"{med(ready) / med(restored):.1f}x faster than a cold boot); the first create, "
        f"which builds the template, took {first:.2f} s"
    )
    print(
        f"{tag} pause (vCPUs stopped, memory in a file), median of {pauses}: {med(saves):.2f} s; "
        f"resume (to agent-ready): {med(resumes):.2f} s; saved memory of an idle 512 MiB "
        f"guest {med(sizes) / 2**20:.0f} MiB"
    )
    if round_trips:
        print(f"{tag} command round trip ('true'), median of {calls}: {med(round_trips) * 1000:.1f} ms")
    print(
        f"{tag} host memory per idle 512 MiB microVM: QEMU RSS {med(rss) / 2**20:.0f} MiB "
        f"cold-booted, {med(restored_rss) / 2**20:.0f} MiB snapshot-restored; cgroup "
        f"(RSS + page cache) {med(cgroup_mem) / 2**20:.0f} MiB cold-booted, median of {boots}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--pauses", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.boots, args.calls, args.pauses))

"""MicroVM figures: boot to agent-ready vs a raw QEMU boot to init, command round trip, memory.

Run as root after scripts/install: ``.venv/bin/python -m bench.microvm [--boots 10] [--calls 100]``.
Drives the QEMU driver in-process (no HTTP), on a private data directory. The accelerator is
chosen as the engine would (``STOCKADE_MICROVM_ACCEL``) and printed next to every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import stockade.agent
from stockade.config import default_images_dir
from stockade.images import ImageStore, guest
from stockade.runtimes import hostops
from stockade.runtimes.base import SandboxSpec
from stockade.runtimes.qemu import QEMU, QemuDriver
from stockade.runtimes.qemu_accel import Accelerator

AGENT_DIR = Path(stockade.agent.__file__).parent


async def raw_boot(accel: Accelerator, vmlinux: Path, initrd: Path) -> float:
    """Seconds from starting QEMU to the guest's /init printing its marker (no jail, no disks)."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        QEMU, "-M", "microvm", *accel.qemu_args, "-m", "512", "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot", "-kernel", str(vmlinux), "-initrd", str(initrd),
        "-append", " ".join(["console=ttyS0", "quiet", "panic=-1", "reboot=t",
                             *accel.kernel_args, "stockade.probe=1"]),
        "-serial", "stdio", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
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


async def main(boots: int, calls: int) -> None:
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
        for i in range(boots):
            raw.append(await raw_boot(accel, vmlinux, initrd))
            spec = SandboxSpec(id=f"sbbench{i}", image="base",
                               directory=data_dir / "sandboxes" / f"sbbench{i}")
            start = time.monotonic()
            try:
                await driver.create(spec)
                await driver.start(spec)
                ready.append(time.monotonic() - start)
                if i == 0:
                    round_trips = await round_trip(driver, spec, calls)
                await asyncio.sleep(2)  # idle
                pids = hostops.cgroup_pids(driver.cgroup(spec))
                rss.append(sum(rss_bytes(p) for p in pids))
                cgroup_mem.append((await driver.stats(spec)).memory_bytes)
            finally:
                await driver.destroy(spec)
            print(f"  boot {i + 1}/{boots}: raw {raw[-1]:.2f} s, agent-ready {ready[-1]:.2f} s")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    med = statistics.median
    print(f"{tag} raw QEMU boot to init (kernel+initramfs, no disks), median of {boots}: "
          f"{med(raw):.2f} s")
    print(f"{tag} create + boot to agent-ready (jailed), median of {boots}: {med(ready):.2f} s "
          f"({med(ready) / med(raw):.1f}x the raw boot)")
    if round_trips:
        print(f"{tag} command round trip ('true'), median of {calls}: "
              f"{med(round_trips) * 1000:.1f} ms")
    print(f"{tag} host memory per idle 512 MiB microVM: QEMU RSS {med(rss) / 2**20:.0f} MiB, "
          f"cgroup (RSS + page cache) {med(cgroup_mem) / 2**20:.0f} MiB, median of {boots}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--boots", type=int, default=10)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.boots, args.calls))

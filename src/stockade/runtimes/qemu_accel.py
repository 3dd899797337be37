"""Choosing the microVM accelerator: KVM where a guest really boots under it, TCG otherwise.

``STOCKADE_MICROVM_ACCEL`` picks: ``auto`` (the default) boots a probe guest (the real kernel
and initramfs, told to print a marker and power off) under KVM and uses KVM only if the marker
comes back; ``kvm`` and ``tcg`` force one. Some hosts have a /dev/kvm that cannot run ordinary
guests (nested or paravirtual KVM), which is why the existence of /dev/kvm is not enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..images.guest import PROBE_OK
from .base import DriverError

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT = 30.0
#: The translation cache of TCG, in MiB (QEMU's default of 1 GiB would dwarf small guests).
TCG_CACHE_MB = 64


@dataclass(frozen=True)
class Accelerator:
    """How QEMU runs guest code, and why that was chosen."""

    name: str  # "kvm" or "tcg"
    reason: str
    qemu_args: tuple[str, ...]
    kernel_args: tuple[str, ...]


def kvm() -> Accelerator:
    return Accelerator("kvm", "", ("-accel", "kvm", "-cpu", "host"), ())


def tcg() -> Accelerator:
    # Under TCG the guest cannot calibrate its TSC (microvm has no HPET or PM timer and the PIT
    # calibration fails), and without a clock it hangs at boot; QEMU's TCG TSC runs at the host
    # TSC's rate, so tell the guest that rate.
    return Accelerator(
        "tcg",
        "",
        ("-accel", f"tcg,tb-size={TCG_CACHE_MB}", "-cpu", "max"),
        ("tsc=reliable", f"tsc_early_khz={host_tsc_khz()}"),
    )


def host_tsc_khz() -> int:
    """The host's TSC rate in kHz, as the kernel reports it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return 2_000_000


async def probe_kvm(vmlinux: Path, initrd: Path) -> str:
    """Boot the probe guest under KVM; return "" if it worked, else why not."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm on this host"
    proc = await asyncio.create_subprocess_exec(
        QEMU,
        "-M",
        "microvm",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "128",
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
        "console=ttyS0 quiet panic=-1 reboot=t stockade.probe=1",
        "-serial",
        "stdio",
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return f"a probe guest did not boot under KVM within {PROBE_TIMEOUT:.0f} s"
    text = out.decode(errors="replace")
    if PROBE_OK in text:
        return ""
    lines = [line for line in text.splitlines() if "error" in line.lower()] or text.splitlines()
    return f"a probe guest failed under KVM: {lines[0][:200] if lines else 'no output'}"


async def choose_accelerator(vmlinux: Path, initrd: Path, mode: str | None = None) -> Accelerator:
    """The accelerator for ``mode`` (default: $STOCKADE_MICROVM_ACCEL, else auto)."""
    mode = (mode or os.environ.get("STOCKADE_MICROVM_ACCEL") or "auto").lower()
    if mode == "tcg":
        return _why(tcg(), "forced by STOCKADE_MICROVM_ACCEL=tcg")
    if mode == "kvm":
        return _why(kvm(), "forced by STOCKADE_MICROVM_ACCEL=kvm")
    if mode != "auto":
        raise DriverError(f"STOCKADE_MICROVM_ACCEL must be auto, kvm or tcg, not {mode!r}")
    failure = await probe_kvm(vmlinux, initrd)
    if not failure:
        return _why(kvm(), "a probe guest booted under KVM")
    return _why(tcg(), f"{failure}; using TCG (software emulation, slow)")


def _why(accel: Accelerator, reason: str) -> Accelerator:
    return Accelerator(accel.name, reason, accel.qemu_args, accel.kernel_args)

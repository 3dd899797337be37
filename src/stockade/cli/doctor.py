"""``stockade doctor``: what this host can run, and why not when it cannot."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import typer
from rich.console import Console

from ..config import default_images_dir
from ..images import guest
from ..runtimes.qemu_accel import choose_accelerator

out = Console()


def doctor() -> None:
    """Check this host's isolation tiers; say which microVM accelerator will be used and why."""
    problems = 0
    for tool, tier in (("runc", "container"), ("runsc", "gvisor"), ("qemu-system-x86_64", "microvm")):
        found = shutil.which(tool)
        out.print(f"{tier:10} {tool}: " + (found or "[red]missing[/red] (run scripts/install)"))
        problems += found is None
    images = default_images_dir()
    try:
        kernel = guest.load_kernel(images)
        import stockade.agent

        initrd = guest.initramfs(images, Path(stockade.agent.__file__).parent)
    except guest.GuestError as exc:
        out.print(f"microvm    guest: [red]{exc}[/red]")
        raise typer.Exit(1) from None
    out.print(f"microvm    guest kernel: {kernel.version} ({kernel.vmlinux})")
    accel = asyncio.run(choose_accelerator(kernel.vmlinux, initrd))
    colour = "green" if accel.name == "kvm" else "yellow"
    out.print(f"microvm    accelerator: [{colour}]{accel.name}[/{colour}] ({accel.reason})")
    if problems:
        raise typer.Exit(1)

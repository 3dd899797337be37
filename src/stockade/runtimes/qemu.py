"""The microVM tier: QEMU ``-M microvm`` with a dedicated guest kernel per sandbox.

Each sandbox is one QEMU process, jailed by host/jail.py (own uid, namespaces, cgroup,
pivot_root into its own files, QEMU's seccomp sandbox on). The guest boots Debian's cloud kernel
with the initramfs of images/guest.py, mounts the image's shared read-only disk under the
sandbox's own writable disk (its size is the disk quota) and runs the same agent as the other
tiers, reached over a virtio-serial port whose host end is a unix socket.

Files of one sandbox (``spec.directory``, root only)::

    vm/         owned by the VM's uid and bound at /vm in the jail: disk.img, agent.sock,
                qmp.sock, console.log (the guest's serial console)
    jail/       empty mount point of the jail's root (a tmpfs visible only to the jail)
    jail.json   what the jailer does;  qemu.log: what the jailer and QEMU printed
    machine.json  QEMU's command line and guest files (saved with a checkpoint)
    template    the snapshot-start template its disk came from, until it first starts
    checkpoint/ its saved memory while paused (runtimes/qemu_snapshot.py)
    paused      present while paused

and ``<data_dir>/runtime/microvm/<id>.json`` holds the jail's pid (and its start time, so a
reused pid is never mistaken for it), which is how orphans are found after an engine crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..images import ImageStore, guest
from .. import host
from ..host import jail, reaper
from . import qemu_devices
from .base import (
    Capabilities,
    DriverError,
    NotSupported,
    RuntimeDriver,
    RuntimeState,
    SandboxSpec,
    Stats,
    greet,
)
from .channel import AgentChannel, ChannelClosed
from .qemu_accel import Accelerator, choose_accelerator
from .qemu_snapshot import MACHINE, Machine, Templates, renewal, resume_saved, save_running, set_limits

QEMU = "qemu-system-x86_64"
#: Host uids of microVMs: one per sandbox, derived from its id, above the container tier's range.
UID_BASE = int(os.environ.get("STOCKADE_MICROVM_UID_BASE", "1200000000"))
UID_RANGE = 1 << 20
#: Host memory QEMU may use beyond the guest's RAM (its own heap, TCG's translation cache).
OVERHEAD_MB = {"kvm": 128, "tcg": 192}
#: Threads QEMU may run besides vCPUs (main loop, RCU, I/O worker pool).
QEMU_PIDS = 96
BOOT_TIMEOUT = {"kvm": 30.0, "tcg": 180.0}
JAIL_SCRIPT = Path(jail.__file__)


def _starttime(pid: int) -> int | None:
    """The kernel's start time of ``pid``, or None if it is gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


class QemuDriver(RuntimeDriver):
    """``isolation="microvm"``: untrusted code behind its own kernel."""

    tier = "microvm"
    #: Pause saves the guest's memory to a file through QEMU's migration, except with volumes:
    #: QEMU cannot save a guest with a mounted 9p export, so such a microVM pauses in RAM (its
    #: vCPUs stopped). Snapshot start, with a network and volumes too: see qemu_snapshot.py.
    #: Files snapshots need the guest's ext4 disk read on the host (not done yet).
    capabilities = Capabilities(
        memory_pause=True,
        pause_to_disk=True,
        pause_to_disk_with_network=True,
        pty=True,
        volumes=True,
        network_policy=True,
        workspace=True,
        archive=True,
        memory_snapshot_start=True,
        snapshot_start_with_network=True,
        snapshot_start_with_volumes=True,
    )
    #: The guest's agent keeps the commands in a cgroup with the sandbox's pids limit and the
    #: guest's memory less a reserve (agent/limits.py): a bomb is killed or refused inside.
    limits_inside = True

    def __init__(self, data_dir: Path, images: ImageStore, agent_dir: Path) -> None:
        self.data_dir = data_dir
        self.images = images
        self.agent_dir = agent_dir
        self.runtime_root = data_dir / "runtime" / self.tier
        self.cgroup_parent = host.cgroup_parent(data_dir)
        self._accel: Accelerator | None = None
        self.templates = Templates(self)

    async def accelerator(self) -> Accelerator:
        """KVM or TCG, decided once per engine (see qemu_accel.py)."""
        if self._accel is None:
            files = await asyncio.to_thread(self._guest_files, None)
            self._accel = await choose_accelerator(files[0], files[1])
        return self._accel

    def _guest_files(self, image: str | None) -> tuple[Path, Path, Path | None]:
        try:
            kernel = guest.load_kernel(self.images.root)
            initrd = guest.initramfs(self.images.root, self.agent_dir)
            disk = guest.image_disk(self.images, image) if image else None
        except guest.GuestError as exc:
            raise DriverError(str(exc)) from None
        return kernel.vmlinux, initrd, disk

    # -- paths -------------------------------------------------------------------------------
    def cgroup(self, spec: SandboxSpec) -> str:
        return f"{self.cgroup_parent}/{spec.id}"

    def _record_path(self, spec: SandboxSpec) -> Path:
        return self.runtime_root / f"{spec.id}.json"

    @staticmethod
    def uid(spec: SandboxSpec) -> int:
        return UID_BASE + int(hashlib.sha256(spec.id.encode()).hexdigest(), 16) % UID_RANGE

    # -- lifecycle ---------------------------------------------------------------------------
    async def create(self, spec: SandboxSpec) -> None:
        d = spec.directory
        uid = self.uid(spec)
        try:
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
            vm = d / "vm"
            vm.mkdir(mode=0o700, exist_ok=True)
            os.chown(vm, uid, uid)
            (d / "jail").mkdir(mode=0o700, exist_ok=True)
            disk = vm / "disk.img"
            if not disk.exists() and not await self.templates.claim(spec, disk, uid):
                await self.make_disk(disk, spec.resources.disk_mb, uid)
            await asyncio.to_thread(self._guest_files, spec.image)
        except BaseException:
            await self.destroy(spec)
            raise

    async def start(self, spec: SandboxSpec) -> None:
        template = self.templates.claimed(spec)
        if template is not None:
            await self.templates.start_from(spec, template)  # cold-boots if it cannot
            return
        await self.boot(spec)

    async def boot(self, spec: SandboxSpec, template: bool = False) -> None:
        """Boot the guest from its kernel (a cold boot); return once the agent answers. With
        ``template``, a snapshot template VM: ``spec``'s devices, unset (qemu_devices.py)."""
        machine = await self.machine(spec, template)
        await self._launch(spec, machine, template=template)
        timeout = float(os.environ.get("STOCKADE_MICROVM_BOOT_TIMEOUT") or BOOT_TIMEOUT[machine.accel])
        channel = await self._wait_agent(spec, timeout)
        try:
            await set_limits(channel, spec)
        finally:
            await channel.aclose()

    async def sync_guest(self, spec: SandboxSpec, timeout: float = 60.0) -> None:
        """Have the guest write its dirty pages to its disk (``sys.sync`` through the agent)."""
        channel = await self._wait_agent(spec, timeout)
        try:
            await asyncio.wait_for(channel.call("sys.sync"), timeout)
        finally:
            await channel.aclose()

    async def machine(self, spec: SandboxSpec, template: bool = False) -> Machine:
        """The QEMU command line and guest files that boot ``spec`` (or its template VM)."""
        accel = await self.accelerator()
        kernel, initrd, image_disk = await asyncio.to_thread(self._guest_files, spec.image)
        assert image_disk is not None
        vcpus = max(1, min(int(-(-spec.resources.cpu // 1)), os.cpu_count() or 1))
        python = self.images.get(spec.image).python or "/usr/bin/python3"
        return Machine(
            accel=accel.name,
            argv=tuple(qemu_argv(spec, accel, vcpus, python, template)),
            kernel=str(kernel),
            initrd=str(initrd),
            image_disk=str(image_disk),
        )

    async def _launch(
        self, spec: SandboxSpec, machine: Machine, incoming: bool = False, template: bool = False
    ) -> None:
        """Start the jailed QEMU of ``machine`` (waiting for a saved memory if ``incoming``;
        as a snapshot template VM if ``template``)."""
        d = spec.directory
        for name in ("agent.sock", "qmp.sock", "console.log"):
            with contextlib.suppress(FileNotFoundError):
                (d / "vm" / name).unlink()
        (d / "paused").unlink(missing_ok=True)
        res = spec.resources
        memory = (res.memory_mb + OVERHEAD_MB[machine.accel]) << 20
        vcpus = max(1, min(int(-(-res.cpu // 1)), os.cpu_count() or 1))
        cgroups = jail.create_cgroup(self.cgroup(spec), memory, res.cpu, QEMU_PIDS + vcpus)
        uid = self.uid(spec)
        devices = await qemu_devices.prepare(spec, uid, template)  # tap, settings, volumes
        jail_spec = {
            "root": str(d / "jail"),
            "uid": uid,
            "gid": uid,
            "cgroups": cgroups,
            "binds": [
                [machine.kernel, "/guest/vmlinux", False],
                [machine.initrd, "/guest/initrd", False],
                [machine.image_disk, "/guest/image.ext4", False],
                [str(d / "vm"), "/vm", True],
                *devices["binds"],
            ],
            "devices": [["null", 1, 3], ["zero", 1, 5], ["urandom", 1, 9]]
            + ([["kvm", 10, 232]] if machine.accel == "kvm" else [])
            + devices["devices"],
            **devices["jail"],  # /proc and umask for 9p volumes
            # The largest files QEMU writes are the disk (pre-sized), a saved memory (through a
            # descriptor the host passes) and the console log, which a guest could otherwise
            # grow without bound.
            "rlimits": {
                "RLIMIT_FSIZE": max(
                    (max(res.disk_mb, res.memory_mb) + 128) << 20, devices["fsize"] + (64 << 20)
                ),
                "RLIMIT_CORE": 0,
                "RLIMIT_NOFILE": 1024,
            },
            "argv": [*machine.argv, *(["-incoming", "defer"] if incoming else [])],
        }
        (d / "jail.json").write_text(json.dumps(jail_spec))
        machine.write(d / MACHINE)
        self.runtime_root.mkdir(parents=True, exist_ok=True)
        with open(d / "qemu.log", "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *qemu_devices.launcher(spec, template),
                sys.executable,
                "-I",
                "-S",
                str(JAIL_SCRIPT),
                str(d / "jail.json"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        record = {
            "pid": proc.pid,
            "start": _starttime(proc.pid),
            "uid": uid,
            "accel": machine.accel,
            "directory": str(d),
        }
        self._record_path(spec).write_text(json.dumps(record))

    def layer_file(self, spec: SandboxSpec) -> Path:
        return spec.directory / "vm" / "disk.img"

    async def reopen(self, spec: SandboxSpec) -> None:
        if not (spec.directory / "vm" / "disk.img").exists():
            raise DriverError(f"the disk of microVM {spec.id} is gone")

    def _pid(self, spec: SandboxSpec) -> int | None:
        """The jail's pid if it is still the process we started."""
        try:
            record = json.loads(self._record_path(spec).read_text())
        except (OSError, ValueError):
            return None
        pid = record.get("pid")
        if isinstance(pid, int) and record.get("start") is not None and _starttime(pid) == record["start"]:
            return pid
        return None

    def tail_log(self, spec: SandboxSpec, size: int = 1000) -> str:
        """Why the guest failed if its console says (a kernel panic, init's own failure), then
        the end of its console and of QEMU's own output, for error messages."""
        parts = []
        try:
            console = (spec.directory / "vm" / "console.log").read_bytes()[-65536:]
        except OSError:
            console = b""
        for line in console.decode(errors="replace").splitlines():
            if "Kernel panic" in line or guest.INIT_FAILED in line:
                parts.append(f"the guest reports: {line.split('] ', 1)[-1].strip()}")
                break
        for name, path in (
            ("console", spec.directory / "vm" / "console.log"),
            ("qemu", spec.directory / "qemu.log"),
        ):
            try:
                text = path.read_bytes()[-size:].decode(errors="replace").strip()
            except OSError:
                continue
            if text:
                parts.append(f"[{name}] {text}")
        return "\n".join(parts) or "(no output)"

    async def _wait_agent(self, spec: SandboxSpec, timeout: float) -> AgentChannel:
        socket = str(spec.directory / "vm" / "agent.sock")
        deadline = time.monotonic() + timeout
        while True:
            channel = None
            try:
                channel = await AgentChannel.connect_unix(socket)
                await greet(channel, min(5.0, timeout))
                return channel
            except (OSError, ChannelClosed, asyncio.TimeoutError) as exc:
                if channel is not None:
                    await channel.aclose()
                if self._pid(spec) is None:
                    raise DriverError(f"the microVM of {spec.id} stopped: {self.tail_log(spec)}") from None
                if time.monotonic() > deadline:
                    raise DriverError(
                        f"the agent of microVM {spec.id} did not answer within "
                        f"{timeout:.0f} s ({exc!r}); the guest is hung or too "
                        f"slow: {self.tail_log(spec)}"
                    ) from None
                await asyncio.sleep(0.05)

    async def connect(self, spec: SandboxSpec) -> AgentChannel:
        return await self._wait_agent(spec, 15.0)

    async def state(self, spec: SandboxSpec) -> RuntimeState:
        if self._pid(spec) is not None:
            return RuntimeState.PAUSED if (spec.directory / "paused").exists() else RuntimeState.RUNNING
        return RuntimeState.STOPPED if self._record_path(spec).exists() else RuntimeState.ABSENT

    async def stats(self, spec: SandboxSpec) -> Stats:
        return host.cgroup_stats(self.cgroup(spec))

    async def oom_kills(self, spec: SandboxSpec) -> int:
        return host.cgroup_oom_kills(self.cgroup(spec))

    async def pause(self, spec: SandboxSpec) -> None:
        await qmp(spec.directory / "vm" / "qmp.sock", "stop")
        (spec.directory / "paused").touch()

    async def resume(self, spec: SandboxSpec) -> None:
        await qmp(spec.directory / "vm" / "qmp.sock", "cont")
        (spec.directory / "paused").unlink(missing_ok=True)

    def after_resume(self, spec: SandboxSpec) -> dict[str, Any] | None:
        # The guest's clock stood still while its vCPUs were stopped.
        return renewal(spec, identity=False)

    # -- memory checkpoints (pause to disk; see qemu_snapshot.py) ------------------------------
    async def checkpoint(self, spec: SandboxSpec, image_dir: Path) -> None:
        if blocker := qemu_devices.migration_blocker(spec):
            raise NotSupported(blocker)
        await save_running(self, spec, image_dir)

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> None:
        await resume_saved(self, spec, image_dir)

    @staticmethod
    async def make_disk(disk: Path, size_mb: int, uid: int) -> None:
        """A sparse, empty ext4 file of ``size_mb`` for the overlay's upper layer. With a journal
        (unlike the host-mounted disks of the other tiers): the guest's kernel, not the host's,
        holds its unwritten metadata, and a killed QEMU must not leave a disk that needs fsck."""
        with open(disk, "wb") as f:
            f.truncate(size_mb << 20)
        await host.run(
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
            str(disk),
        )
        os.chown(disk, uid, uid)
        disk.chmod(0o600)

    async def stop(self, spec: SandboxSpec) -> None:
        pid = self._pid(spec)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # QEMU itself too: unshare's --kill-child is a parent-death signal, which the kernel
        # clears when the jail switches to the VM's uid, so QEMU would outlive it.
        for qemu_pid in host.cgroup_pids(self.cgroup(spec)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(qemu_pid, signal.SIGKILL)
        await host.empty_cgroup(self.cgroup(spec), grace=2.0)
        for _ in range(200):
            if pid is None or _starttime(pid) is None:
                break
            await asyncio.sleep(0.01)
        if pid is not None and _starttime(pid) is None:
            # The jail (QEMU once it execs) outlives a killed unshare for a moment and is then
            # orphaned to the engine, which adopts orphans (reaper.py): it is in the session
            # unshare led, and unshare itself is reaped already.
            reaper.reap_sessions({pid})
        host.remove_cgroup(self.cgroup(spec))
        for name in ("agent.sock", "qmp.sock"):
            with contextlib.suppress(OSError):
                (spec.directory / "vm" / name).unlink()

    async def destroy(self, spec: SandboxSpec) -> None:
        await self.stop(spec)
        if host.mounts_under(spec.directory):
            raise DriverError(f"{spec.directory} still has mounts; not removing it")
        await asyncio.to_thread(shutil.rmtree, spec.directory, True)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            # A template VM whose build an engine crash interrupted lives elsewhere.
            recorded = json.loads(self._record_path(spec).read_text())["directory"]
            await self.templates.collect(Path(recorded))
        self._record_path(spec).unlink(missing_ok=True)

    async def known_ids(self) -> set[str]:
        if not self.runtime_root.is_dir():
            return set()
        return {p.stem for p in self.runtime_root.glob("*.json")}


def qemu_argv(
    spec: SandboxSpec, accel: Accelerator, vcpus: int, python: str, template: bool = False
) -> list[str]:
    """QEMU's command line, with paths as the jail shows them."""
    res = spec.resources
    cmdline = [
        "console=ttyS0",
        "quiet",
        "panic=-1",
        "reboot=t",
        "pci=off",
        *accel.kernel_args,
        f"stockade.hostname={spec.hostname}",
        f"stockade.python={python}",
        *qemu_devices.kernel_args(spec),
    ]
    return [
        shutil.which(QEMU) or f"/usr/bin/{QEMU}",
        "-M",
        "microvm",
        *accel.qemu_args,
        "-smp",
        str(vcpus),
        "-m",
        str(res.memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        "/guest/vmlinux",
        "-initrd",
        "/guest/initrd",
        "-append",
        " ".join(cmdline),
        "-drive",
        "id=image,file=/guest/image.ext4,format=raw,if=none,readonly=on",
        "-device",
        "virtio-blk-device,drive=image",
        "-drive",
        "id=disk,file=/vm/disk.img,format=raw,if=none,discard=unmap",
        "-device",
        "virtio-blk-device,drive=disk",
        "-device",
        "virtio-serial-device",
        "-chardev",
        "socket,id=agent,path=/vm/agent.sock,server=on,wait=off",
        "-device",
        f"virtserialport,chardev=agent,name={guest.AGENT_PORT}",
        "-object",
        "rng-random,id=rng,filename=/dev/urandom",
        "-device",
        "virtio-rng-device,rng=rng",
        "-chardev",
        "file,id=console,path=/vm/console.log",
        "-serial",
        "chardev:console",
        "-qmp",
        "unix:/vm/qmp.sock,server=on,wait=off",
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        *qemu_devices.qemu_args(spec, template),
    ]


async def qmp(
    socket: Path, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Run one QMP command on a VM's monitor socket and return its result."""

    async def exchange() -> Any:
        reader, writer = await asyncio.open_unix_connection(str(socket))
        try:

            async def reply() -> dict[str, Any]:
                while True:
                    line = await reader.readline()
                    if not line:
                        raise DriverError(f"QEMU closed its monitor during {command}")
                    message = json.loads(line)
                    if "return" in message or "error" in message:
                        return message  # type: ignore[no-any-return]

            await reader.readline()  # the greeting
            writer.write(b'{"execute": "qmp_capabilities"}\n')
            await reply()
            writer.write(json.dumps({"execute": command, "arguments": arguments or {}}).encode() + b"\n")
            message = await reply()
        finally:
            writer.close()
        if "error" in message:
            raise DriverError(f"QEMU refused {command}: {message['error'].get('desc')}")
        return message["return"]

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        raise DriverError(f"cannot reach the QEMU monitor at {socket}: {exc!r}") from None

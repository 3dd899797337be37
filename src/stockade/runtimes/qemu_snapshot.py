"""MicroVM memory snapshots: pause to a file, and snapshot start from a booted template.

A *saved VM* is a directory holding ``memory`` (QEMU's migration stream, see qemu_migrate.py),
``machine.json`` (the QEMU command line and guest files it ran with: a saved memory only loads
into the same machine) and ``manifest.json`` (size and CRC-32 of both, written last; see
runtimes/suspend.py). The guest's writable disk is not in it: pausing keeps the sandbox's own
disk as it was when the vCPUs stopped.

**Pause** (``checkpoint``) saves the running VM into the engine's checkpoint directory and QEMU
is then killed; **resume** (``restore``) starts a jailed QEMU with ``-incoming defer``, loads the
memory, sets the guest's clock (it stood still while saved) and reseeds its kernel RNG.

**Snapshot start**: per image, vCPUs, memory, disk size, accelerator, guest files and device
layout (a network interface; how many volumes, read-only or not), a template VM is booted once,
its agent readied, and it is saved with its disk under
``<data_dir>/runtime/microvm-templates/<slot>.<key>/``. The template VM has the sandbox's devices
but unset (qemu_devices.prepare: its network backend is a QEMU hub port, its settings share
empty, its volume exports empty directories, none mounted), so its memory can be saved. A new
sandbox gets a sparse copy of the template's disk at create and, at start, loads the template's
memory instead of booting (its tap as the network backend), then gets its own identity through
the agent (``sys.seed``: hostname = its id, a fresh /etc/machine-id, the clock, host entropy and
a forced reseed of the kernel RNG) and, with a network or volumes, its own settings
(``sys.setup``: the guest init's settings stage run again on its own settings share: address,
routes, resolver, CA bundle, volume mounts) before it is handed out. Templates are built under a
temporary name and renamed, under a lock (so concurrent creates build one once); a change of
any input makes a new key, and the slot's old template is deleted. ``STOCKADE_MICROVM_SNAPSHOT=0``
turns snapshot start off. If a template cannot be built or restored, the sandbox cold-boots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from .. import host
from . import qemu_devices
from .base import DriverError, SandboxSpec
from .channel import AgentCallError, AgentChannel, ChannelClosed
from .qemu_migrate import MigrationFailed, Qmp, load_memory, save_memory
from .suspend import CheckpointCorrupt, seal, verify

if TYPE_CHECKING:
    from .qemu import QemuDriver

log = logging.getLogger("stockade.microvm")

MACHINE = "machine.json"
MEMORY = "memory"
DISK = "disk.img"
#: In a new sandbox's directory: the template its disk came from (removed once started).
CLAIM = "template"
#: Bump when the layout of a template changes.
FORMAT = 1
#: The hostname the key of a template is computed with (the real template VM has its own id).
KEY_HOST = "sbtemplate"
RESTORE_AGENT_TIMEOUT = 60.0
#: How long a restored guest may take to apply its network and volume settings.
SETUP_TIMEOUT = 120.0
#: Seconds before a template whose build failed is tried again.
RETRY_AFTER = 600.0


@dataclasses.dataclass(frozen=True)
class Machine:
    """What one QEMU process runs: its accelerator, command line and guest files."""

    accel: str
    argv: tuple[str, ...]
    kernel: str
    initrd: str
    image_disk: str

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def read(cls, path: Path) -> "Machine":
        try:
            data = json.loads(path.read_text())
            return cls(
                accel=data["accel"],
                argv=tuple(data["argv"]),
                kernel=data["kernel"],
                initrd=data["initrd"],
                image_disk=data["image_disk"],
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointCorrupt(f"{path} is unreadable: {exc}") from None

    def missing(self) -> list[str]:
        return [p for p in (self.kernel, self.initrd, self.image_disk) if not os.path.exists(p)]


def enabled() -> bool:
    """Whether snapshot start is on (``STOCKADE_MICROVM_SNAPSHOT``, default on)."""
    return os.environ.get("STOCKADE_MICROVM_SNAPSHOT", "1").strip().lower() not in ("0", "false", "no", "off")


# -- pause and resume ------------------------------------------------------------------------


async def save_running(driver: "QemuDriver", spec: SandboxSpec, image_dir: Path) -> None:
    """Stop the guest and save it into ``image_dir``; QEMU is left stopped (``stop`` kills it).
    On failure the guest runs on, if its QEMU still does."""
    machine = Machine.read(spec.directory / MACHINE)
    image_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    monitor = spec.directory / "vm" / "qmp.sock"
    try:
        await save_memory(monitor, image_dir / MEMORY)
    except BaseException:
        with contextlib.suppress(DriverError, OSError):
            async with await Qmp.connect(monitor, timeout=2.0) as qmp:
                await qmp.execute("cont")
        raise
    machine.write(image_dir / MACHINE)
    await asyncio.to_thread(_sync_disk, spec.directory / "vm" / DISK)
    await asyncio.to_thread(seal, image_dir)


def _sync_disk(disk: Path) -> None:
    with open(disk, "rb") as f:
        os.fsync(f.fileno())


async def resume_saved(driver: "QemuDriver", spec: SandboxSpec, image_dir: Path) -> None:
    """Bring back a sandbox saved by :func:`save_running` (CheckpointCorrupt if it cannot be)."""
    await asyncio.to_thread(verify, image_dir)
    machine = Machine.read(image_dir / MACHINE)
    if gone := machine.missing():
        raise CheckpointCorrupt(
            f"the guest files it was saved with are gone ({', '.join(gone)}): "
            f"the microVM guest was rebuilt since"
        )
    await driver.reopen(spec)
    await load(driver, spec, machine, image_dir / MEMORY, identity=False)


async def load(
    driver: "QemuDriver", spec: SandboxSpec, machine: Machine, memory: Path, identity: bool
) -> None:
    """Start QEMU on ``machine``, load ``memory``, and renew what must not be shared or stale:
    the clock, the kernel RNG, and with ``identity`` the hostname and machine-id."""
    await driver._launch(spec, machine, incoming=True)
    try:
        await load_memory(spec.directory / "vm" / "qmp.sock", memory)
    except MigrationFailed as exc:
        tail = driver.tail_log(spec, 400)
        await driver.stop(spec)
        raise CheckpointCorrupt(f"{exc} [{tail}]") from None
    except BaseException:
        await driver.stop(spec)
        raise
    channel = await driver._wait_agent(spec, RESTORE_AGENT_TIMEOUT)
    try:
        await asyncio.wait_for(channel.call("sys.seed", renewal(spec, identity)), 15.0)
        await set_limits(channel, spec)
        if identity and qemu_devices.needs_config(spec):  # its own network and volumes
            await asyncio.wait_for(channel.call("sys.setup"), SETUP_TIMEOUT)
    except (AgentCallError, ChannelClosed, asyncio.TimeoutError) as exc:
        raise DriverError(
            f"the restored agent of {spec.id} could not renew its clock, "
            f"entropy, identity and settings: {exc!r}"
        ) from None
    finally:
        await channel.aclose()


async def set_limits(channel: AgentChannel, spec: SandboxSpec) -> None:
    """Give the guest's agent the sandbox's limits for its commands (``sys.limits``, after every
    boot and restore: a template VM was booted for another sandbox). A guest that cannot keep
    them (a kernel without the cgroup controllers) runs its commands limited by the VM alone."""
    try:
        await asyncio.wait_for(channel.call("sys.limits", {"pids": spec.resources.pids}), 15.0)
    except AgentCallError as exc:
        log.warning("microVM %s: no limits inside the guest: %s", spec.id, exc)
    except (ChannelClosed, asyncio.TimeoutError) as exc:
        raise DriverError(f"the agent of microVM {spec.id} did not take its limits: {exc!r}") from None


def renewal(spec: SandboxSpec, identity: bool) -> dict[str, Any]:
    """``sys.seed`` parameters for a guest that was just restored."""
    params: dict[str, Any] = {"hex": secrets.token_hex(64), "time": time.time()}
    if identity:
        params.update(hostname=spec.hostname, machine_id=uuid.uuid4().hex)
    return params


# -- snapshot start --------------------------------------------------------------------------


class Templates:
    """The template cache of one driver."""

    def __init__(self, driver: "QemuDriver") -> None:
        self.driver = driver
        self.root = driver.data_dir / "runtime" / "microvm-templates"
        self._locks: dict[str, asyncio.Lock] = {}
        #: Keys whose build failed: (when, why); creates boot cold until RETRY_AFTER passed.
        self._failed: dict[str, tuple[float, str]] = {}

    async def claim(self, spec: SandboxSpec, disk: Path, uid: int) -> bool:
        """Give a new sandbox the disk of its template (building the template if needed);
        False if it should boot cold instead."""
        if not enabled():
            return False
        try:
            template = await self.ensure(spec)
            await host.run("cp", "--sparse=always", "--reflink=auto", str(template / DISK), str(disk))
        except (DriverError, OSError) as exc:
            log.warning("microVM %s: no template (%s); booting cold", spec.id, exc)
            disk.unlink(missing_ok=True)
            return False
        os.chown(disk, uid, uid)
        disk.chmod(0o600)
        (spec.directory / CLAIM).write_text(str(template))
        return True

    @staticmethod
    def claimed(spec: SandboxSpec) -> Path | None:
        """The template a new sandbox's disk came from, if it has not started yet."""
        try:
            return Path((spec.directory / CLAIM).read_text())
        except OSError:
            return None

    async def start_from(self, spec: SandboxSpec, template: Path) -> None:
        """Start a new sandbox from ``template``; boot it cold if that fails."""
        driver = self.driver
        try:
            machine = Machine.read(template / MACHINE)
            machine = dataclasses.replace(machine, argv=qemu_devices.live_argv(machine.argv))
            await load(driver, spec, machine, template / MEMORY, identity=True)
        except DriverError as exc:
            log.warning(
                "microVM %s: restoring template %s failed (%s); booting cold", spec.id, template.name, exc
            )
            await driver.stop(spec)
            if isinstance(exc, CheckpointCorrupt):
                self._discard(template)
            disk = spec.directory / "vm" / DISK
            disk.unlink(missing_ok=True)  # the guest may have written to the copied disk
            await driver.make_disk(disk, spec.resources.disk_mb, driver.uid(spec))
            (spec.directory / CLAIM).unlink(missing_ok=True)
            await driver.boot(spec)
            return
        (spec.directory / CLAIM).unlink(missing_ok=True)

    async def ensure(self, spec: SandboxSpec) -> Path:
        """The template for ``spec``'s image and resources, built now if missing or stale."""
        slot, key = await self._key(spec)
        target = self.root / f"{slot}.{key}"
        if _ready(target):
            return target
        async with self._locks.setdefault(slot, asyncio.Lock()), self._flock(slot):
            if _ready(target):
                return target
            if (failed := self._failed.get(key)) and time.monotonic() - failed[0] < RETRY_AFTER:
                raise DriverError(f"building its template failed recently: {failed[1]}")
            try:
                await self._build(spec, slot, key, target)
            except DriverError as exc:
                self._failed[key] = (time.monotonic(), str(exc)[:300])
                raise
        return target

    async def _key(self, spec: SandboxSpec) -> tuple[str, str]:
        """The template's slot (what it is for) and key (a hash of everything it depends on)."""
        machine = await self.driver.machine(dataclasses.replace(spec, id=KEY_HOST), template=True)
        stamps = [
            (p, os.stat(p).st_size, os.stat(p).st_mtime_ns)
            for p in (machine.argv[0], machine.kernel, machine.initrd, machine.image_disk)
        ]
        inputs = json.dumps([FORMAT, dataclasses.asdict(machine), stamps, spec.resources.disk_mb])
        res = spec.resources
        vcpus = machine.argv[machine.argv.index("-smp") + 1]
        slot = (
            f"{spec.image}-{vcpus}cpu-{res.memory_mb}m-{res.disk_mb}m-{machine.accel}"
            f"{qemu_devices.layout(spec)}"
        )
        return slot, hashlib.sha256(inputs.encode()).hexdigest()[:16]

    @contextlib.asynccontextmanager
    async def _flock(self, slot: str) -> AsyncIterator[None]:
        """Serialise template builds of one slot across processes sharing the data dir."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        async with host.flocked_async(self.root / f".{slot}.lock"):
            yield

    async def _build(self, spec: SandboxSpec, slot: str, key: str, target: Path) -> None:
        """Boot a template VM, save it with its disk into ``target`` (atomically)."""
        driver = self.driver
        # Short names: the VM's sockets must fit in a unix socket address (108 bytes).
        build = self.root / f".b-{hashlib.sha256(slot.encode()).hexdigest()[:8]}"
        await asyncio.to_thread(shutil.rmtree, build, True)  # an interrupted earlier build
        build.mkdir(mode=0o700)
        # The sandbox's devices (a network interface, volume exports), unset: see prepare().
        vm_spec = SandboxSpec(
            id=f"sbtpl{key[:12]}",
            image=spec.image,
            resources=spec.resources,
            directory=build / "w",
            network=spec.network,
            volumes=spec.volumes,
        )
        started = time.monotonic()
        try:
            uid = driver.uid(vm_spec)
            vm = vm_spec.directory / "vm"
            vm.mkdir(mode=0o700, parents=True)
            os.chown(vm, uid, uid)
            (vm_spec.directory / "jail").mkdir(mode=0o700)
            await driver.make_disk(vm / DISK, spec.resources.disk_mb, uid)
            await driver.boot(vm_spec, template=True)
            await driver.sync_guest(vm_spec)  # every clone starts from a disk that has it all
            await save_running(driver, vm_spec, build)
            await driver.stop(vm_spec)
            os.rename(vm / DISK, build / DISK)
            await asyncio.to_thread(shutil.rmtree, vm_spec.directory)
            driver._record_path(vm_spec).unlink()
            for old in self.root.glob(f"{slot}.*"):
                await asyncio.to_thread(shutil.rmtree, old, True)
            os.rename(build, target)
        except BaseException:
            await driver.destroy(vm_spec)
            await asyncio.to_thread(shutil.rmtree, build, True)
            raise
        log.info("microVM template %s built in %.1f s", target.name, time.monotonic() - started)

    async def collect(self, vm_directory: Path) -> None:
        """Remove the build directory of an interrupted template build (found by its VM's
        directory after an engine crash)."""
        build = vm_directory.parent
        if build.parent == self.root and build.name.startswith(".b-"):
            await asyncio.to_thread(shutil.rmtree, build, True)

    def _discard(self, template: Path) -> None:
        broken = template.with_name(f".broken-{template.name}-{secrets.token_hex(4)}")
        with contextlib.suppress(OSError):
            os.rename(template, broken)
            shutil.rmtree(broken, ignore_errors=True)


def _ready(template: Path) -> bool:
    return (template / "manifest.json").exists() and (template / DISK).exists()

"""Sandbox lifecycle past "running": pause, resume, stop, start, and what a timeout does.

States and the only transitions allowed (anything else is a 409 Conflict)::

    running --pause--> paused --resume/connect--> running
    running --stop---> stopped --start/connect--> running
    paused  --stop---> stopped            (the saved memory is dropped, the files kept)
    stopped --archive--> archived --start/connect--> running   (archive.py: layer compressed)
    any     --kill---> gone               (every trace removed)

``pause`` keeps processes and memory, as the driver's capabilities say (``pause_mode``): to disk
where the tier has ``pause_to_disk`` (gVisor, microVMs without volumes: the sandbox then uses no
memory or CPU and survives an engine restart and a host reboot), else frozen in RAM (the
container tier's cgroup freezer, a microVM's stopped vCPUs; a host reboot turns it into
``stopped``).
``stop`` keeps only the filesystem, and needs ``persistence="workspace"``. A paused or stopped
sandbox is deleted ``auto_delete`` seconds after it was paused or stopped (archiving does not
move that deadline); a stopped one with ``auto_archive`` is archived that many seconds after it
stopped. See docs/persistence.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..net import NetworkPolicy
from .. import host
from ..runtimes.base import DriverError, NotSupported, RuntimeState
from ..runtimes.ocidriver import RELEASE_WAIT
from ..runtimes.suspend import CheckpointCorrupt
from . import archive
from .archive import ArchiveCorrupt
from .errors import Conflict, EngineError, InvalidRequest, SandboxNotFound, SandboxUnavailable, Unsupported
from ..models import WAITING_TAG, SandboxInfo
from .records import SandboxRecord

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("stockade.engine")

PERSISTENCE = ("ephemeral", "workspace")
ON_TIMEOUT = ("kill", "pause", "stop")
#: Seconds a paused or stopped sandbox is kept before it is deleted (default 7 days).
DEFAULT_AUTO_DELETE = float(os.environ.get("STOCKADE_AUTO_DELETE", 7 * 86400))
#: How long a stop or pause waits for the sandbox to write its dirty pages to disk.
FLUSH_TIMEOUT = 30.0
MAX_AUTO_DELETE = 365 * 86400.0
CHECKPOINT_DIR = "checkpoint"
#: How long an idle check waits for the agent's list of processes.
IDLE_CHECK = 10.0
TRANSITIONS: dict[str, dict[str, str]] = {
    "pause": {"running": "paused"},
    "resume": {"paused": "running"},
    "stop": {"running": "stopped", "paused": "stopped"},
    "start": {"stopped": "running", "archived": "running"},
    "archive": {"stopped": "archived"},
}


class CheckpointUnusable(Conflict):
    """The saved memory of a paused sandbox is damaged; the sandbox was kept, stopped."""

    code = "checkpoint_corrupt"


def check_options(persistence: str, on_timeout: str, auto_delete: float | None) -> float:
    """Validate the create-time options; return the auto-delete interval."""
    if persistence not in PERSISTENCE:
        raise InvalidRequest(f"persistence must be one of {', '.join(PERSISTENCE)}, not {persistence!r}")
    if on_timeout not in ON_TIMEOUT:
        raise InvalidRequest(f"on_timeout must be one of {', '.join(ON_TIMEOUT)}, not {on_timeout!r}")
    if on_timeout == "stop" and persistence != "workspace":
        raise InvalidRequest(
            "on_timeout='stop' keeps the sandbox's files, which needs persistence='workspace'"
        )
    interval = DEFAULT_AUTO_DELETE if auto_delete is None else float(auto_delete)
    if not 1 <= interval <= MAX_AUTO_DELETE:
        raise InvalidRequest(f"auto_delete must be between 1 and {MAX_AUTO_DELETE:.0f} seconds")
    return interval


def check_auto_archive(persistence: str, auto_archive: float | None) -> float | None:
    """Validate the create-time ``auto_archive`` (seconds after a stop; None: never)."""
    if auto_archive is None:
        return None
    if persistence != "workspace":
        raise InvalidRequest("auto_archive archives a stopped workspace, which needs persistence='workspace'")
    if not 1 <= auto_archive <= MAX_AUTO_DELETE:
        raise InvalidRequest(f"auto_archive must be between 1 and {MAX_AUTO_DELETE:.0f} seconds")
    return float(auto_archive)


def _allowed(record: SandboxRecord, action: str) -> str:
    """The state ``action`` leads to, or a Conflict saying what would work instead."""
    target = TRANSITIONS[action].get(record.state)
    if target is None:
        hint = {
            "paused": "resume it (connect) or kill it",
            "stopped": "start it (connect), archive it or kill it",
            "archived": "start it (connect) or kill it",
            "running": "pause, stop or kill it",
        }.get(record.state, "wait and retry")
        raise Conflict(f"cannot {action} sandbox {record.id}: it is {record.state}; {hint}")
    return target


class Lifecycle:
    """Pause, resume, stop, start and recovery of an engine's sandboxes."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        #: Releases of checkpointed sandboxes (runsc takes ~1.5 s to delete one), run after
        #: pause returns; anything else done to the sandbox waits for it (:meth:`settled`).
        self._releases: dict[str, asyncio.Task[None]] = {}

    async def settled(self, sandbox_id: str) -> None:
        """Wait until a paused sandbox's runtime leftovers are released."""
        if task := self._releases.pop(sandbox_id, None):
            with contextlib.suppress(DriverError):
                await task

    def _release_later(self, record: SandboxRecord) -> None:
        driver = self.engine.drivers[record.tier]
        self._releases[record.id] = asyncio.get_running_loop().create_task(driver.stop(record.spec))

    def _checkpoint_dir(self, record: SandboxRecord) -> Path:
        return record.directory / CHECKPOINT_DIR

    async def _quiet(self, record: SandboxRecord) -> None:
        """Drop the engine's channel: the agent is about to stop answering on it."""
        await self.engine.drop_channel(record.id)

    async def _flush(self, record: SandboxRecord) -> None:
        """Have the sandbox's kernel write its dirty pages to disk before it is stopped or saved
        (best effort and bounded: a wedged agent must not block a stop)."""
        if record.state != "running":
            return
        with contextlib.suppress(EngineError, asyncio.TimeoutError):
            await asyncio.wait_for(self.engine.call(record.id, "sys.sync", {}), FLUSH_TIMEOUT)

    def _settle(self, record: SandboxRecord, state: str, reason: str | None = None) -> SandboxInfo:
        record.state, record.reason, record.message = state, reason, None
        record.last_active_at = time.time()
        lifetime = record.timeout if state == "running" else record.auto_delete
        record.expires_at = time.time() + lifetime
        record.archive_at = (
            time.time() + record.auto_archive if state == "stopped" and record.auto_archive else None
        )
        record.save()
        self.engine.arm_timer(record)
        self.engine.changed(record)
        return record.info()

    # -- the verbs ---------------------------------------------------------------------------
    async def pause(self, sandbox_id: str, reason: str | None = None) -> SandboxInfo:
        """Save processes and memory; the sandbox stops running until resumed."""
        engine = self.engine
        record = engine.record(sandbox_id)
        async with engine.lock(sandbox_id):
            target = _allowed(record, "pause")
            driver = engine.drivers[record.tier]
            mode = driver.pause_mode(record.spec)
            if mode is None:
                raise Unsupported.missing(record.tier, "memory_pause", f"pause sandbox {sandbox_id}")
            try:
                if mode == "checkpoint":
                    await self._flush(record)  # so that a later stop can drop the memory
                    await self._quiet(record)
                    image = self._checkpoint_dir(record)
                    await asyncio.to_thread(shutil.rmtree, image, True)
                    await driver.checkpoint(record.spec, image)
                    record.paused_with = "checkpoint"
                    self._release_later(record)
                else:  # channels stay open: their streams carry on after the thaw
                    await driver.pause(record.spec)
                    record.paused_with = "freezer"
            except DriverError as exc:
                if await driver.state(record.spec) == RuntimeState.RUNNING:
                    raise SandboxUnavailable(
                        f"could not pause sandbox {sandbox_id}: {exc}; it keeps running"
                    ) from None
                # runsc may take the sandbox down with a failed checkpoint: keep the files.
                with contextlib.suppress(DriverError):
                    await driver.stop(record.spec)
                record.paused_with = None
                self._settle(record, "stopped", "pause_failed")
                raise SandboxUnavailable(
                    f"could not pause sandbox {sandbox_id}: {exc}; its processes were lost "
                    f"with it, its files are kept and it is now stopped: start it to boot "
                    f"afresh"
                ) from None
            return self._settle(record, target, reason)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        """Bring a paused sandbox back exactly where it was."""
        engine = self.engine
        record = engine.record(sandbox_id)
        async with engine.lock(sandbox_id):
            target = _allowed(record, "resume")
            driver = engine.drivers[record.tier]
            if record.paused_with == "freezer":
                try:
                    await driver.resume(record.spec)
                except DriverError as exc:
                    raise SandboxUnavailable(f"could not resume sandbox {sandbox_id}: {exc}") from None
                info = self._settle(record, target)
                renewal = driver.after_resume(record.spec)
            else:
                info = await self._restore(record, target)
                renewal = {"hex": secrets.token_hex(64)}
        if renewal:
            with contextlib.suppress(Exception):
                await engine.call(sandbox_id, "sys.seed", renewal)
        return info

    async def _restore(self, record: SandboxRecord, target: str) -> SandboxInfo:
        """Resume from the checkpoint on disk (under the sandbox's lock)."""
        sandbox_id, driver = record.id, self.engine.drivers[record.tier]
        image = self._checkpoint_dir(record)
        await self._ensure_network(record)
        await self.settled(sandbox_id)
        try:
            await driver.restore(record.spec, image)
        except CheckpointCorrupt as exc:
            await self._keep_files_only(record, image)
            raise CheckpointUnusable(
                f"the saved memory of sandbox {sandbox_id} cannot be restored ({exc}); "
                f"its files are kept and it is now stopped: start it to boot afresh"
            ) from None
        except DriverError as exc:
            with contextlib.suppress(DriverError):
                await driver.stop(record.spec)
            raise SandboxUnavailable(
                f"could not resume sandbox {sandbox_id}: {exc}; it stays paused"
            ) from None
        # A checkpoint is restored at most once, so no two sandboxes share its memory
        # (random generators included); fresh entropy goes to the kernel pool too.
        await asyncio.to_thread(shutil.rmtree, image, True)
        record.paused_with = None
        return self._settle(record, target)

    async def _keep_files_only(self, record: SandboxRecord, image: Path) -> None:
        """A checkpoint that cannot be restored: clean up, set it aside, keep the files."""
        with contextlib.suppress(DriverError):
            await self.engine.drivers[record.tier].stop(record.spec)
        broken = record.directory / f"{CHECKPOINT_DIR}.broken-{int(time.time())}"
        with contextlib.suppress(OSError):
            image.rename(broken)
        log.warning("sandbox %s: checkpoint unusable, kept in %s; sandbox stopped", record.id, broken)
        record.paused_with = None
        self._settle(record, "stopped", "checkpoint_corrupt")

    async def stop(self, sandbox_id: str, reason: str | None = None) -> SandboxInfo:
        """Stop every process; keep the filesystem (persistence="workspace" only)."""
        engine = self.engine
        record = engine.record(sandbox_id)
        async with engine.lock(sandbox_id):
            target = _allowed(record, "stop")
            if record.persistence != "workspace":
                raise Conflict(
                    f"sandbox {sandbox_id} is ephemeral: stopping would keep its "
                    f"files; kill it, or create it with persistence='workspace'"
                )
            await self._flush(record)
            await self._quiet(record)
            await self.settled(sandbox_id)
            try:
                await engine.drivers[record.tier].stop(record.spec)
            except DriverError as exc:
                raise SandboxUnavailable(f"could not stop sandbox {sandbox_id}: {exc}") from None
            await asyncio.to_thread(shutil.rmtree, self._checkpoint_dir(record), True)
            record.paused_with = None
            return self._settle(record, target, reason)

    async def start(self, sandbox_id: str) -> SandboxInfo:
        """Boot a stopped sandbox again on its kept filesystem (same id)."""
        engine = self.engine
        record = engine.record(sandbox_id)
        async with engine.lock(sandbox_id):
            target = _allowed(record, "start")
            driver = engine.drivers[record.tier]
            if record.state == "archived":
                await self._unarchive(record)
            await self._ensure_network(record)
            try:
                await driver.reopen(record.spec)
                await driver.start(record.spec)
            except (DriverError, OSError) as exc:
                # OSError: the host refused a step of the set-up (its disk, its directories),
                # e.g. after a runtime killed mid-checkpoint; the files stay, a retry may work.
                log.warning("sandbox %s: start failed: %r", sandbox_id, exc)
                with contextlib.suppress(DriverError, OSError):
                    await driver.stop(record.spec)
                raise SandboxUnavailable(
                    f"could not start sandbox {sandbox_id}: {exc}; it stays stopped"
                ) from None
            return self._settle(record, target)

    async def archive(self, sandbox_id: str) -> SandboxInfo:
        """Compress a stopped sandbox's writable layer to free disk (start restores it)."""
        engine = self.engine
        record = engine.record(sandbox_id)
        async with engine.lock(sandbox_id):
            _allowed(record, "archive")
            driver = engine.drivers[record.tier]
            if not driver.capabilities.archive:
                raise Unsupported.missing(record.tier, "archive", f"archive sandbox {sandbox_id}")
            try:
                layer = driver.layer_file(record.spec)
                await driver.stop(record.spec)  # idempotent: nothing of it stays mounted
                if not await host.loop_released(layer, RELEASE_WAIT):  # flushed to the file
                    raise SandboxUnavailable(
                        f"could not archive sandbox {sandbox_id}: its disk "
                        f"is still busy after its stop; try again"
                    )
                info = await archive.archive(layer, record.directory)
            except NotSupported as exc:
                raise Conflict(f"cannot archive sandbox {sandbox_id}: {exc}") from None
            except DriverError as exc:
                raise SandboxUnavailable(
                    f"could not archive sandbox {sandbox_id}: {exc}; it stays stopped, its files untouched"
                ) from None
            record.state, record.archive_at = "archived", None
            record.save()  # from here on the archive is the truth: the layer may go
            await asyncio.to_thread(archive.drop_layer, layer)
            engine.arm_timer(record)
            engine.changed(record)
            log.info(
                "sandbox %s archived: %d bytes on disk -> %d",
                sandbox_id,
                info.stored_bytes,
                info.archive_bytes,
            )
            return record.info()

    def held_disk_mb(self, sandbox_id: str) -> int:
        """MiB of host disk a sandbox holds or may fill, for quotas: its disk size in any state
        (it may start and fill it), plus its memory checkpoint while paused to disk; only an
        archived one counts just its archive."""
        record = self.engine.record(sandbox_id)
        mib = 1 << 20
        if record.state == "archived":
            return -(-archive.held_bytes(record.directory) // mib)
        held = record.resources.disk_mb
        if record.paused_with == "checkpoint":
            with contextlib.suppress(OSError):
                size = sum(f.stat().st_size for f in self._checkpoint_dir(record).iterdir())
                held += -(-size // mib)
        return held

    async def _unarchive(self, record: SandboxRecord) -> None:
        """Bring an archived sandbox's layer back; it is then stopped (about to start)."""
        layer = self.engine.drivers[record.tier].layer_file(record.spec)
        try:
            await archive.restore(layer, record.directory)
        except ArchiveCorrupt as exc:
            log.warning("sandbox %s: %s", record.id, exc.message)
            raise ArchiveCorrupt(
                f"cannot restore sandbox {record.id}: {exc.message}; it stays "
                f"archived and its archive is kept for inspection (kill the "
                f"sandbox to remove it)"
            ) from None
        except DriverError as exc:
            raise SandboxUnavailable(
                f"could not restore sandbox {record.id} from its archive: {exc}; it stays archived"
            ) from None
        record.state = "stopped"
        record.save()

    async def connect(self, sandbox_id: str) -> SandboxInfo:
        """Make the sandbox usable: resume it if paused, start it if stopped or archived."""
        state = self.engine.record(sandbox_id).state
        if state == "paused":
            return await self.resume(sandbox_id)
        if state in ("stopped", "archived"):
            return await self.start(sandbox_id)
        return self.engine.record(sandbox_id).info()

    async def expire(self, sandbox_id: str) -> None:
        """The sandbox's deadline passed: apply ``on_timeout``, or auto-delete if not running."""
        engine = self.engine
        try:
            record = engine.record(sandbox_id)
            if time.time() < record.deadline:  # the loop's timers may fire a little early
                engine.arm_timer(record)
                return
            if record.delete_at is not None and record.delete_at <= time.time():
                await engine.kill(sandbox_id, "timeout", "its ttl passed")
                return
            if (
                record.state == "stopped"
                and record.archive_at is not None
                and record.archive_at <= time.time() < record.expires_at
            ):
                await self._auto_archive(record)
                return
            if record.state == "running" and record.idle_timeout and await self._busy(record):
                return
            action = record.on_timeout if record.state == "running" else "kill"
            if action == "pause":
                try:
                    await self.pause(sandbox_id, "timeout")
                    return
                except (SandboxUnavailable, Conflict) as exc:
                    log.warning("sandbox %s: pause on timeout failed (%s)", sandbox_id, exc)
                    action = "stop" if record.persistence == "workspace" else "kill"
            if action == "stop":
                with contextlib.suppress(Conflict):
                    await self.stop(sandbox_id, "timeout")
                    return
            await engine.kill(sandbox_id, "timeout")
        except SandboxNotFound:
            pass

    async def _busy(self, record: SandboxRecord) -> bool:
        """With ``idle_timeout``: whether the sandbox was used within its timeout, or runs a
        command or a terminal now (then its deadline moves to a timeout from now)."""
        engine = self.engine
        idle_until = record.last_active_at + record.timeout
        if time.time() >= idle_until:
            with contextlib.suppress(EngineError, asyncio.TimeoutError):
                found = await asyncio.wait_for(
                    engine.call(record.id, "process.list", {}, touch=False), IDLE_CHECK
                )
                # A code context's interpreter waits for cells, a waiting shell for commands:
                # neither is a running command.
                if any(
                    not str(p.get("tag") or "").startswith(("stockade-code:", WAITING_TAG)) for p in found
                ):
                    engine.touch(record)
                    idle_until = record.last_active_at + record.timeout
        if time.time() >= idle_until:
            return False
        record.expires_at = idle_until
        record.save()
        engine.arm_timer(record)
        return True

    async def _auto_archive(self, record: SandboxRecord) -> None:
        try:
            await self.archive(record.id)
        except (Conflict, SandboxUnavailable) as exc:
            log.warning(
                "sandbox %s: archive after %.0f s stopped failed (%s); it stays stopped",
                record.id,
                record.auto_archive or 0,
                exc,
            )
            record.archive_at = None
            record.save()
            self.engine.arm_timer(record)

    # -- recovery ----------------------------------------------------------------------------
    async def recover(self, record: SandboxRecord) -> bool:
        """After an engine restart: whether to keep a record that is not running now.

        A running workspace whose sandbox vanished (host reboot) and a frozen sandbox whose
        container vanished become stopped; a checkpointed one stays paused if its checkpoint
        is on disk. Ephemeral sandboxes that are not paused are not kept, nor one being killed.
        """
        if record.state == "killing":  # the engine died mid-kill, its files half removed: finish it
            return False
        driver = self.engine.drivers.get(record.tier)
        expired = record.expires_at <= time.time()
        stops = (
            record.state == "running" and record.on_timeout != "kill" and record.persistence == "workspace"
        )  # its timeout keeps the files
        if driver is None or (expired and not stops):
            return False
        state = record.state
        if state == "paused" and record.paused_with == "freezer":
            if await driver.state(record.spec) == RuntimeState.PAUSED:
                return True
            state = "stopped"
        elif state == "paused" and not (self._checkpoint_dir(record) / "manifest.json").exists():
            state = "stopped"
        elif state == "paused":  # checkpointed: release what the runtime may have kept
            with contextlib.suppress(DriverError):
                await driver.stop(record.spec)
        elif state == "running":
            state = "stopped"
        if state in ("stopped", "archived") and record.persistence == "workspace":
            state = await self._settle_archive(record, state)
        if state == "stopped" and record.persistence != "workspace":
            return False
        if state != "paused":
            with contextlib.suppress(DriverError):
                await driver.stop(record.spec)
        if state != record.state:
            log.info("sandbox %s: %s before the restart, now %s", record.id, record.state, state)
            record.paused_with = None
            record.state, record.reason = state, "host_restart"
            record.expires_at = time.time() + record.auto_delete
            record.archive_at = (
                time.time() + record.auto_archive if state == "stopped" and record.auto_archive else None
            )
            record.save()
        return True

    async def _settle_archive(self, record: SandboxRecord, state: str) -> str:
        """Finish an archive or restore that an engine crash interrupted (archive.py)."""
        try:
            layer = self.engine.drivers[record.tier].layer_file(record.spec)
        except NotSupported:
            return state
        if record.state == "archived" and layer.exists():  # killed before the layer went
            with contextlib.suppress(ArchiveCorrupt, OSError):
                await asyncio.to_thread(archive.verify, record.directory)
                await asyncio.to_thread(archive.drop_layer, layer)
        return await asyncio.to_thread(archive.settle, layer, record.directory)

    async def _ensure_network(self, record: SandboxRecord) -> None:
        """Re-create a networked sandbox's namespace if a reboot removed it."""
        net = record.attachment
        if record.network is None or net is None or Path(net["netns"]).exists():
            return
        await self.engine.attach_network(record, NetworkPolicy.parse(record.network) or NetworkPolicy())
        record.save()

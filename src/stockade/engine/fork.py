"""Fork: N copies of a running or paused sandbox (``engine.sandboxes.fork``; docs/fork.md).

**Files, every tier, copy-on-write.** The source's own changes (its overlay's upper directory)
are frozen once into a hidden *fork layer* in the image store, whose parent is the source's
template. Every copy mounts ``lowerdir=<fork layer>:<template layers>`` read-only under an empty
writable disk of its own: a copy costs no disk when it is made, the template is never copied,
and neither the source nor a sibling ever sees a copy's writes (nor the reverse). The layer is
removed when the last sandbox using it is killed.

**Memory, where the driver declares ``forks_memory`` (gVisor).** The source is saved once (a running
source is checkpointed, its files frozen while it is down, then restored in place; a paused one
is already saved) and that checkpoint is restored N times. Each copy then gets fresh kernel
entropy, its own hostname and machine-id (``sys.seed``). User-space state (a Python
``random`` generator, an open session token) is copied as it was, as with ``fork(2)``.

**Files only elsewhere** (container tier: no CRIU here): the copies boot fresh processes on
the frozen files; the source, if running, is frozen only while its upper layer is copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ..images.store import ImageError, ImageNotFound
from ..models import MAX_FORK, SandboxInfo
from ..net import NetworkPolicy as EgressPolicy
from .. import host
from ..runtimes.base import DriverError
from .errors import Conflict, EngineError, InvalidRequest, SandboxUnavailable, Unsupported
from .records import SandboxRecord
from .snapshots import save_upper

if TYPE_CHECKING:
    from .engine import Engine
    from .lifecycle import Lifecycle

log = logging.getLogger("stockade.engine")

#: Fork layers are hidden images named ``fork-<data dir digest>-<12 hex>``: engines may share
#: an image store, and each collects only its own.
LAYER_PREFIX = "fork-"
#: In the source's directory while a running source is saved for a fork.
SAVE_DIR = "fork-checkpoint"


def check_count(count: object) -> int:
    """``count`` if it is a whole number from 1 to :data:`MAX_FORK`, else InvalidRequest."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_FORK:
        raise InvalidRequest(f"count must be a whole number from 1 to {MAX_FORK}, not {count!r}")
    return count


def keeps_memory(engine: "Engine", record: SandboxRecord, memory: bool | None) -> bool:
    """Whether a fork of ``record`` copies processes and memory (``memory``: None = whatever
    the tier can; True = required; False = files only). Raises Conflict/Unsupported (409)."""
    if record.state not in ("running", "paused"):
        raise Conflict(
            f"sandbox {record.id} is {record.state}; only a running or paused "
            f"sandbox can be forked (start it first)"
        )
    driver = engine.drivers[record.tier]
    if record.secrets:
        raise Unsupported(
            f"sandbox {record.id} was created with secrets, which are bound to "
            f"one sandbox; fork is not available for it (create new sandboxes "
            f"with the same secrets instead)"
        )
    if not driver.capabilities.forks_files:
        raise Unsupported(
            f"the {record.tier} tier cannot fork yet (capability forks_files is "
            f"off: its writable layer lives inside the guest's own disk); fork "
            f"works on the container and gvisor tiers"
        )
    if memory is False:
        return False
    if not driver.capabilities.forks_memory:
        if memory:
            raise Unsupported(
                f"the {record.tier} tier cannot copy processes and memory "
                f"(capability forks_memory is off: no process checkpoint on this "
                f"tier); fork with memory=false to copy the filesystem only"
            )
        return False
    blocker = None
    if record.network is not None:
        blocker = "it has a network interface, whose state cannot be cloned yet"
    elif record.state == "paused" and record.paused_with != "checkpoint":
        blocker = "it is paused in RAM, not saved to disk"
    if blocker is None:
        return True
    if memory:
        raise Unsupported(
            f"cannot fork sandbox {record.id} with its memory: {blocker}; fork "
            f"with memory=false to copy the filesystem only"
        )
    return False


async def fork(
    engine: "Engine",
    lifecycle: "Lifecycle",
    sandbox_id: str,
    count: int,
    memory: bool | None = None,
    owner: str | None = None,
) -> list[SandboxInfo]:
    """Make ``count`` copies of ``sandbox_id`` (see the module docstring); all or nothing."""
    count = check_count(count)
    record = engine.record(sandbox_id)
    async with engine.lock(sandbox_id):
        keeps = keeps_memory(engine, record, memory)
        await lifecycle.settled(sandbox_id)
        layer = layer_prefix(engine) + secrets.token_hex(6)
        save = record.directory / SAVE_DIR
        try:
            if keeps:
                image = await _save(engine, lifecycle, record, layer, owner, save)
            else:
                image = None
                await _freeze_files(engine, record, layer, owner)
            results = await asyncio.gather(
                *(_copy(engine, record, layer, image) for _ in range(count)), return_exceptions=True
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, save, True)
    made = [r for r in results if isinstance(r, SandboxRecord)]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        for copy in made:
            with contextlib.suppress(EngineError, DriverError, OSError):
                await engine.kill(copy.id)
        await release_layer(engine, layer)
        error = failed[0]
        if isinstance(error, EngineError):
            raise error
        raise SandboxUnavailable(f"could not fork sandbox {sandbox_id}: {error}") from None
    return [r.info() for r in made]


# -- the source's side ---------------------------------------------------------------------------


async def _save(
    engine: "Engine", lifecycle: "Lifecycle", record: SandboxRecord, layer: str, owner: str | None, save: Path
) -> Path:
    """Freeze the files into ``layer`` and return a checkpoint of the memory to restore from.

    A paused source's own checkpoint serves as is. A running source is checkpointed into
    ``save``, its upper layer copied while it is down, and restored in place; if that restore
    fails, it is kept paused on that checkpoint (resume retries) and the fork fails."""
    driver = engine.drivers[record.tier]
    spec = record.spec
    if record.state == "paused":
        with host.mounted_disk(record.directory / "disk.img") as mnt:
            await _make_layer(engine, record, layer, mnt / "upper", owner)
        return lifecycle._checkpoint_dir(record)
    await lifecycle._flush(record)
    await lifecycle._quiet(record)
    await asyncio.to_thread(shutil.rmtree, save, True)
    try:
        await driver.checkpoint(spec, save)
    except DriverError as exc:
        raise SandboxUnavailable(f"could not save sandbox {record.id} to fork it: {exc}") from None
    try:
        await _make_layer(engine, record, layer, record.directory / "disk" / "upper", owner)
    finally:
        await _restore_source(engine, lifecycle, record, save)
    return save


async def _restore_source(
    engine: "Engine", lifecycle: "Lifecycle", record: SandboxRecord, save: Path
) -> None:
    driver = engine.drivers[record.tier]
    try:
        await driver.stop(record.spec)
        await driver.restore(record.spec, save)
        return
    except DriverError as exc:
        with contextlib.suppress(DriverError):
            await driver.stop(record.spec)
        checkpoint = lifecycle._checkpoint_dir(record)
        await asyncio.to_thread(shutil.rmtree, checkpoint, True)
        await asyncio.to_thread(shutil.copytree, save, checkpoint)
        record.paused_with = "checkpoint"
        record.state, record.reason = "paused", "fork_failed"
        record.save()
        raise SandboxUnavailable(
            f"sandbox {record.id} could not be brought back after saving "
            f"it for a fork ({exc}); it is paused on that save: resume it"
        ) from None


async def _freeze_files(engine: "Engine", record: SandboxRecord, layer: str, owner: str | None) -> None:
    """Files only: copy the upper layer of a frozen source (a running one is thawed after)."""
    driver = engine.drivers[record.tier]
    upper = record.directory / "disk" / "upper"
    try:
        if record.state == "running":
            await driver.pause(record.spec)
            try:
                await _make_layer(engine, record, layer, upper, owner)
            finally:
                await driver.resume(record.spec)
        elif record.paused_with == "freezer":
            await _make_layer(engine, record, layer, upper, owner)
        else:
            with host.mounted_disk(record.directory / "disk.img") as mnt:
                await _make_layer(engine, record, layer, mnt / "upper", owner)
    except DriverError as exc:
        raise SandboxUnavailable(f"could not freeze sandbox {record.id} to fork it: {exc}") from None


async def _make_layer(
    engine: "Engine", record: SandboxRecord, layer: str, upper: Path, owner: str | None
) -> None:
    uid_base = getattr(engine.drivers[record.tier], "uid_base", None)
    try:
        await asyncio.to_thread(
            save_upper,
            engine.images,
            layer,
            upper,
            uid_base,
            record,
            owner,
            source=f"fork of sandbox {record.id}",
            hidden=True,
        )
    except ImageError as exc:
        raise SandboxUnavailable(f"cannot save the fork layer of {record.id}: {exc}") from None


# -- the copies' side ----------------------------------------------------------------------------


async def _copy(engine: "Engine", source: SandboxRecord, layer: str, image: Path | None) -> SandboxRecord:
    """One running copy of ``source`` on ``layer``: restored from ``image``, or booted."""
    record = engine.new_record(source.tier, layer, source.resources)
    record.volumes = [dict(v) for v in source.volumes]
    record.envs, record.metadata = dict(source.envs), dict(source.metadata)
    record.timeout, record.persistence = source.timeout, source.persistence
    record.on_timeout, record.auto_delete = source.on_timeout, source.auto_delete
    record.auto_archive = source.auto_archive
    record.owner = source.owner
    if image is None:
        policy = None
        if source.network is not None:
            policy = EgressPolicy.parse(dict(source.network))
            if policy is not None:
                engine.sandboxes.plan_network(record, policy)
        await engine.boot(record, policy)
    else:
        await _restore_copy(engine, record, image)
    record.state = "running"
    record.expires_at = time.time() + record.timeout
    engine.add_record(record)
    if image is not None:
        try:
            # Neither the clock (gVisor's is the host's) nor the hostname: gVisor refuses both
            # from inside (EPERM), so a copy keeps the source's hostname.
            await engine.call(
                record.id, "sys.seed", {"hex": secrets.token_hex(64), "machine_id": uuid.uuid4().hex}
            )
        except BaseException:
            with contextlib.suppress(EngineError, DriverError, OSError):
                await engine.kill(record.id)
            raise
    return record


async def _restore_copy(engine: "Engine", record: SandboxRecord, image: Path) -> None:
    driver = engine.drivers[record.tier]
    async with engine.lock(record.id):
        try:
            await driver.create(record.spec)
            record.save()
            await driver.restore(record.spec, image)
        except BaseException as exc:
            with contextlib.suppress(DriverError, OSError):
                await driver.destroy(record.spec)
            if isinstance(exc, DriverError):
                raise SandboxUnavailable(f"could not restore a copy: {exc}") from None
            raise


# -- layers ------------------------------------------------------------------------------------


def layer_prefix(engine: "Engine") -> str:
    """How the names of this engine's fork layers start."""
    digest = host.cgroup_parent(engine.config.data_dir).rsplit("-", 1)[-1]
    return f"{LAYER_PREFIX}{digest}-"


async def release_layer(engine: "Engine", image: str) -> None:
    """Remove fork layer ``image`` once no sandbox (and no template) builds on it."""
    if not image.startswith(layer_prefix(engine)) or any(r.image == image for r in engine.records()):
        return
    try:
        await asyncio.to_thread(engine.images.remove, image)
    except ImageNotFound:  # removed by an earlier call
        pass
    except ImageError as exc:  # a snapshot of a copy is its child: it stays for that
        log.info("fork layer %s kept: %s", image, exc)


async def collect_layers(engine: "Engine") -> None:
    """Remove the fork layers no sandbox uses (after a restart, or an interrupted fork)."""
    for info in engine.images.list():
        if info.hidden and info.name.startswith(layer_prefix(engine)):
            await release_layer(engine, info.name)

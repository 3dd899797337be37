"""The engine: creates, tracks, limits and removes the sandboxes of one host.

It owns the host side of every sandbox: the data directory, the runtime drivers, the agent
channels and the wall-clock timers. Its state lives on disk (one ``state.json`` per sandbox), so
a restarted engine re-attaches to what still runs and removes what is expired or orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import agent
from ..config import default_images_dir
from ..images import ImageStore
from ..net import NetConfig, NetError, NetworkManager, NetworkPolicy
from .. import host
from ..runtimes.base import DriverError, Resources, RuntimeDriver, RuntimeState, SandboxSpec, Stats
from ..runtimes.channel import AgentCallError, AgentChannel, ChannelClosed, HostStream
from ..runtimes.qemu import QemuDriver
from ..runtimes.runc import RuncDriver
from ..runtimes.runsc import RunscDriver
from ..models import SandboxEnd
from .ends import MESSAGES, EndRecords, default_keep, default_retention
from .errors import Conflict, EngineError, InvalidRequest, SandboxNotFound, SandboxUnavailable
from .events import Events
from .files import Files
from .fork import collect_layers, release_layer
from .interpreter import CodeContexts
from .lifecycle import Lifecycle
from .pool import WarmPool
from .ports import Tunnel
from .process import translate_agent_error
from .processes import Processes
from .records import SandboxRecord
from .sandboxes import Sandboxes
from .secrets import Secrets
from .templates import Templates
from .usage import Usage
from .volumes import VolumeService, Volumes

log = logging.getLogger("stockade.engine")

TIERS: dict[str, type[RuntimeDriver]] = {
    "container": RuncDriver,
    "gvisor": RunscDriver,
    "microvm": QemuDriver,
}


def default_pool_size() -> dict[str, int]:
    """``$STOCKADE_POOL_SIZE`` warm sandboxes for each tier with the ``warm_pool`` capability
    (default 1)."""
    size = int(os.environ.get("STOCKADE_POOL_SIZE", "1"))
    return {tier: size for tier, cls in TIERS.items() if cls.capabilities.warm_pool}


#: The longest one request/response call to an agent may take (a recursive remove of a huge
#: tree is the slowest legitimate one).
CALL_TIMEOUT = 120.0
#: How long a starting engine waits for the data directory's lock: a supervisor may restart the
#: engine while its killed predecessor's last file descriptors are still being closed.
LOCK_WAIT = 10.0


async def _take_lock(path: Path) -> int:
    """An fd exclusively locking ``path``, waiting up to :data:`LOCK_WAIT` seconds for it."""
    fd = await host.acquire(path, timeout=LOCK_WAIT)
    if fd is None:
        holders = host.lock_holders(path)
        raise EngineError(
            f"another engine is using {path.parent} (its lock is held by {holders or 'an unknown process'})"
        )
    return fd


@dataclass(frozen=True)
class EngineConfig:
    """Where the engine keeps its state and what a sandbox gets when the caller says nothing."""

    data_dir: Path
    images_dir: Path | None = None  # default: $STOCKADE_IMAGES_DIR or <data_dir>/images
    default_timeout: float = 300.0
    max_timeout: float = 24 * 3600.0
    default_template: str = "base"
    default_resources: Resources = field(default_factory=Resources)
    agent_dir: Path = Path(agent.__file__).parent
    #: Started sandboxes kept ready per tier, claimed by creates that ask for the defaults.
    pool_size: dict[str, int] = field(default_factory=default_pool_size)
    #: Operator's network settings (CA bundle, upstream DNS, limits); see docs/network.md.
    network: NetConfig = field(default_factory=NetConfig.from_env)
    #: End records kept (ends.py): at most this many, for at most this many seconds.
    ended_keep: int = field(default_factory=default_keep)
    ended_retention: float = field(default_factory=default_retention)


def new_id() -> str:
    """An opaque sandbox id that is also a valid hostname."""
    return "sb" + secrets.token_hex(9)


class Engine:
    """All sandboxes of one host. Use ``async with Engine(config) as engine``.

    Callers use its services only (docs/architecture.md): ``sandboxes``, ``processes``,
    ``files``, ``volumes``, ``templates`` and ``code``; the other public methods serve those
    services, the lifecycle and the warm pool."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.sandbox_dir = config.data_dir / "sandboxes"
        self.images = ImageStore(config.images_dir or default_images_dir(config.data_dir))
        self.net = NetworkManager(config.data_dir, config.network)
        self.drivers: dict[str, RuntimeDriver] = {
            tier: cls(config.data_dir, self.images, config.agent_dir)  # type: ignore[call-arg]
            for tier, cls in TIERS.items()
        }
        self._records: dict[str, SandboxRecord] = {}
        self._channels: dict[str, AgentChannel] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock_fd: int | None = None
        self.pool = WarmPool(self, config.pool_size)
        self.lifecycle = Lifecycle(self)
        self.volume_store = Volumes(config.data_dir)
        self.ends = EndRecords(config.data_dir / "ended", config.ended_keep, config.ended_retention)
        self.events = Events()
        self.usage = Usage(self)
        #: The name of the last command started in each sandbox (for "out of memory (NAME)"
        #: where the kernel's log cannot name the process: gVisor's Sentry dies as a whole).
        self.commands: dict[str, str] = {}
        # The engine interface: every front end calls these and nothing else.
        self.sandboxes = Sandboxes(self, self.lifecycle)
        self.processes = Processes(self)
        self.files = Files(self)
        self.volumes = VolumeService(self.volume_store, self.sandboxes.volume_users)
        self.templates = Templates(self)
        self.code = CodeContexts(self)
        self.secrets = Secrets(self)

    # -- opening and closing -----------------------------------------------------------------
    async def __aenter__(self) -> "Engine":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Take the data directory's lock, then re-attach or clean up what is on disk."""
        self.sandbox_dir.mkdir(parents=True, exist_ok=True)
        # Root inside a container-tier sandbox is an unprivileged host uid that must traverse
        # (not list) these directories to reach its own root filesystem.
        for directory in (self.config.data_dir, self.sandbox_dir):
            directory.chmod(0o711)
        self._lock_fd = await _take_lock(self.config.data_dir / "engine.lock")
        self.ends.load()
        await self.recover()
        self.usage.start()
        await collect_layers(self)
        if self.images.exists(self.config.default_template):
            self.pool.fill()

    async def close(self, kill_all: bool = False) -> None:
        """Stop timers and close channels; sandboxes keep running unless ``kill_all``.

        Warm (unclaimed) sandboxes are always removed: nobody is waiting for them.
        """
        await self.usage.close()
        self.events.close()
        await self.pool.drain()
        await self.templates.builds.close()  # before the kill: a build kills its own sandbox
        if kill_all:
            await asyncio.gather(*(self.kill(i) for i in list(self._records)), return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for channel in self._channels.values():
            await channel.aclose()
        self._channels.clear()
        for task in list(self._tasks):
            task.cancel()
        await self.net.close()
        await self.volume_store.close()
        if not self._records:  # nothing of this data directory runs on: drop its cgroup parent
            host.remove_cgroup(host.cgroup_parent(self.config.data_dir))
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def recover(self) -> None:
        """Re-attach live sandboxes; destroy expired, broken and orphaned ones."""
        now = time.time()
        for directory in sorted(self.sandbox_dir.iterdir()):
            try:
                record = SandboxRecord.load(directory / "state.json")
            except ValueError:
                await self._destroy_unknown(directory)
                continue
            driver = self.drivers.get(record.tier)
            alive = (
                driver is not None
                and record.state == "running"
                and record.expires_at > now
                and await driver.state(record.spec) == RuntimeState.RUNNING
            )
            if alive or await self.lifecycle.recover(record):
                self._records[record.id] = record
                self.arm_timer(record)
            else:
                await self._destroy_unknown(directory)
                if record.state != "creating":  # a create the caller never saw succeed
                    lost = "timeout" if record.expires_at <= now else "host_lost"
                    self._bury(record, "killed" if record.state == "killing" else lost)
        for tier, driver in self.drivers.items():
            for orphan in await driver.known_ids() - set(self._records):
                await self._destroy_unknown(self.sandbox_dir / orphan)
        parent = host.cgroup_parent(self.config.data_dir)
        for d in host.cgroup_dirs(parent):
            for sub in d.iterdir():
                if sub.is_dir() and sub.name not in self._records:
                    host.remove_cgroup(f"{parent}/{sub.name}")
        await self.net.recover({i for i, r in self._records.items() if r.network is not None})

    async def _destroy_unknown(self, directory: Path) -> None:
        spec = SandboxSpec(id=directory.name, image="", directory=directory)
        for driver in self.drivers.values():
            with contextlib.suppress(DriverError, OSError):
                await driver.destroy(spec)
        with contextlib.suppress(NetError, OSError):
            await self.net.detach(directory.name)

    # -- making and removing sandboxes ------------------------------------------------------
    async def attach_network(self, record: SandboxRecord, policy: NetworkPolicy) -> None:
        """Make the sandbox's network namespace and apply ``policy`` to it."""
        try:
            await self.net.attach(record.id, policy, record.owner, record.secrets)
        except NetError as exc:
            raise SandboxUnavailable(f"could not set up the sandbox's network: {exc}") from None

    def add_record(self, record: SandboxRecord) -> None:
        """Start tracking a sandbox that now runs, and arm its timer."""
        record.save()
        self._records[record.id] = record
        self.arm_timer(record)

    def live_ids(self) -> set[str]:
        """The ids of every tracked sandbox."""
        return set(self._records)

    def records(self) -> list[SandboxRecord]:
        """Every tracked sandbox, oldest first."""
        return sorted(self._records.values(), key=lambda r: r.created_at)

    def open_channel(self, sandbox_id: str) -> AgentChannel | None:
        """The engine's channel to a sandbox's agent if one is open and no lifecycle change
        runs (never opens one: a microVM's agent serves one connection at a time)."""
        channel = self._channels.get(sandbox_id)
        if channel is None or channel.closed or self.lock(sandbox_id).locked():
            return None
        return channel

    async def drop_channel(self, sandbox_id: str) -> None:
        """Close the engine's channel to a sandbox whose agent is about to stop answering."""
        if channel := self._channels.pop(sandbox_id, None):
            await channel.aclose()

    def new_record(self, tier: str, template: str, resources: Resources) -> SandboxRecord:
        """A record for a sandbox not created yet."""
        sandbox_id = new_id()
        return SandboxRecord(
            id=sandbox_id,
            tier=tier,
            image=template,
            resources=resources,
            directory=self.sandbox_dir / sandbox_id,
            timeout=self.config.default_timeout,
        )

    async def boot(self, record: SandboxRecord, network: NetworkPolicy | None = None) -> None:
        """Create and start the sandbox of ``record`` (wiring its ``network`` meanwhile); on
        any failure leave nothing behind."""
        driver = self.drivers[record.tier]
        async with self.lock(record.id):
            try:
                steps = [driver.create(record.spec)]
                if network is not None:
                    steps.append(self.attach_network(record, network))
                # Both run to the end before anything is undone, so nothing is half-made.
                for result in await asyncio.gather(*steps, return_exceptions=True):
                    if isinstance(result, BaseException):
                        raise result
                record.save()
                await driver.start(record.spec)
            except BaseException as exc:
                await self._destroy_unknown(record.directory)
                if isinstance(exc, DriverError):
                    raise SandboxUnavailable(f"could not start the sandbox: {exc}") from None
                raise

    def check_timeout(self, timeout: float) -> float:
        if not 1 <= timeout <= self.config.max_timeout:
            raise InvalidRequest(
                f"timeout must be between 1 and {self.config.max_timeout:.0f} seconds, not {timeout}"
            )
        return float(timeout)

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def arm_timer(self, record: SandboxRecord) -> None:
        if old := self._timers.pop(record.id, None):
            old.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, record.deadline - time.time())
        self._timers[record.id] = loop.call_later(delay, self._on_expiry, record.id)

    def _on_expiry(self, sandbox_id: str) -> None:
        self._timers.pop(sandbox_id, None)
        task = asyncio.get_running_loop().create_task(self._expire(sandbox_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, sandbox_id: str) -> None:
        await self.lifecycle.expire(sandbox_id)

    def record(self, sandbox_id: str) -> SandboxRecord:
        """The live record of ``sandbox_id`` or SandboxNotFound."""
        record = self._records.get(sandbox_id)
        if record is None:
            raise SandboxNotFound(f"sandbox {sandbox_id!r} does not exist (or has ended)")
        return record

    async def kill(self, sandbox_id: str, reason: str = "killed", message: str | None = None) -> None:
        """Kill the sandbox and remove every trace of it but its end record, which says why
        it ended (``reason``, ``message``: ends.py)."""
        record = self.record(sandbox_id)
        async with self.lock(sandbox_id):
            if sandbox_id not in self._records:
                return
            # From here on the sandbox is no longer running for anyone who asks (streams that
            # end as its channel closes see it going, not "running"); a failed kill restores it.
            previous, record.state = record.state, "killing"
            with contextlib.suppress(OSError):
                record.save()  # an engine that dies mid-kill finishes it at its restart (recover)
            try:
                await self.lifecycle.settled(sandbox_id)
                if timer := self._timers.pop(sandbox_id, None):
                    timer.cancel()
                if channel := self._channels.pop(sandbox_id, None):
                    await channel.aclose()
                await self.drivers[record.tier].destroy(record.spec)
                if record.network is not None:
                    await self.net.detach(sandbox_id)
            except BaseException:
                record.state = previous
                with contextlib.suppress(OSError):
                    record.save()
                raise
            del self._records[sandbox_id]
            self._bury(record, reason, message)
        self._locks.pop(sandbox_id, None)
        await release_layer(self, record.image)  # the last copy of a fork takes its layer

    def _bury(self, record: SandboxRecord, reason: str, message: str | None = None) -> None:
        """Keep the end record of a sandbox that ended, and tell the event stream."""
        message = message or MESSAGES.get(reason, reason)
        now = time.time()
        info = record.info().model_copy(update={"state": "ended", "reason": reason, "message": message})
        self.ends.add(
            record.owner, SandboxEnd(id=record.id, reason=reason, message=message, ended_at=now, sandbox=info)
        )
        self.events.publish(record.owner, record.id, "ended", reason, message)
        self.usage.forget(record.id)
        self.commands.pop(record.id, None)

    def changed(self, record: SandboxRecord) -> None:
        """Tell the event stream that ``record`` is in a new state (with its reason)."""
        self.events.publish(record.owner, record.id, record.state, record.reason, record.message)

    # -- what nobody asked for: the kernel killed or refused something -------------------------
    def _oom_name(self, record: SandboxRecord) -> str | None:
        victim = host.oom_victim(record.id)
        if victim in (None, "exe", "runsc", "runsc-sandbox", "qemu-system-x86"):
            return self.commands.get(record.id) or victim  # the runtime, not the user's process
        return victim

    async def note_oom(self, record: SandboxRecord, victim: str | None = None) -> str:
        """A process of a running sandbox was killed by the OOM killer (``victim``, if its
        runtime named it): say so in its ``reason`` and on the event stream; returns the words
        ("out of memory (python3)")."""
        name = victim or await asyncio.to_thread(self._oom_name, record)
        message = f"out of memory ({name})" if name else "out of memory"
        self.note_limit(record, "out_of_memory", message)
        return message

    def note_limit(self, record: SandboxRecord, reason: str, message: str) -> None:
        """A limit refused something to a running sandbox: say so (reason, event)."""
        if record.id in self._records and record.state == "running":
            record.reason, record.message = reason, message
            with contextlib.suppress(OSError):
                record.save()
            self.events.publish(record.owner, record.id, record.state, reason, message, kind="process")

    async def end_if_bombed(self, sandbox_id: str, stats: Stats) -> bool:
        """End at once a running sandbox whose runtime died at its memory or pids limit (the
        gVisor tier dies as a whole there); whether it did. A runtime that died otherwise is
        left alone: the lifecycle recovers it (docs/persistence.md)."""
        record = self._records.get(sandbox_id)
        if record is None or record.state != "running" or self.lock(sandbox_id).locked():
            return False
        cgroup = f"{host.cgroup_parent(self.config.data_dir)}/{sandbox_id}"
        if host.cgroup_pids(cgroup):
            return False
        if await self.drivers[record.tier].state(record.spec) == RuntimeState.RUNNING:
            return False
        if stats.oom_kills:
            reason, message = "out_of_memory", await self.note_oom(record)
        else:
            reason = "pids_limit"
            message = (
                f"process limit: the sandbox reached its limit of "
                f"{record.resources.pids} processes and threads"
            )
        log.warning("sandbox %s died by itself: %s", sandbox_id, message)
        with contextlib.suppress(SandboxNotFound):
            await self.kill(sandbox_id, reason, message)
        return True

    def check_later(self, sandbox_id: str) -> None:
        """After a failed call: look at the sandbox's cgroup in the background (it may have
        died at a limit) without holding up the caller."""
        record = self._records.get(sandbox_id)
        if record is None:
            return

        async def check() -> None:
            with contextlib.suppress(DriverError, OSError, SandboxNotFound):
                await self.usage.notice(record, await self.drivers[record.tier].stats(record.spec))

        task = asyncio.get_running_loop().create_task(check())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- talking to the agent -----------------------------------------------------------------
    def touch(self, record: SandboxRecord) -> None:
        """The sandbox is being used now (idle timeouts count from here)."""
        record.last_active_at = time.time()

    async def channel(self, sandbox_id: str, touch: bool = True) -> AgentChannel:
        """The (cached) channel to a sandbox's agent; a paused or stopped sandbox created with
        ``auto_resume`` is resumed or started first. ``touch``: the use counts as activity."""
        record = self.record(sandbox_id)
        if touch:
            self.touch(record)
        if record.state in ("paused", "stopped", "archived") and record.auto_resume:
            log.info("sandbox %s: %s, resumed by a request (auto_resume)", sandbox_id, record.state)
            await self.lifecycle.connect(sandbox_id)
        if record.state != "running":
            raise Conflict(
                f"sandbox {sandbox_id} is {record.state}; connect to it (which "
                f"resumes or starts it) before using it"
            )
        channel = self._channels.get(sandbox_id)
        if channel is None or channel.closed:
            try:
                channel = await self.drivers[record.tier].connect(record.spec)
            except DriverError as exc:
                why = await self.diagnose(record)
                self.check_later(sandbox_id)
                raise SandboxUnavailable(f"{exc}{why}") from None
            self._channels[sandbox_id] = channel
        return channel

    @staticmethod
    async def open_stream(channel: AgentChannel, sandbox_id: str, method: str, params: dict[str, Any]) -> Any:
        """Open a stream; an agent that hung up is SandboxUnavailable, not a crash."""
        try:
            return await channel.open(method, params)
        except (ChannelClosed, ConnectionError) as exc:
            raise SandboxUnavailable(f"sandbox {sandbox_id}: {exc}") from None

    async def stream(self, sandbox_id: str, method: str, params: dict[str, Any]) -> HostStream:
        """Open a stream to the sandbox's agent (errors translated)."""
        stream: HostStream = await self.open_stream(
            await self.channel(sandbox_id), sandbox_id, method, params
        )
        return stream

    async def call(self, sandbox_id: str, method: str, params: dict[str, Any], touch: bool = True) -> Any:
        """One request/response call to the agent, errors translated."""
        channel = await self.channel(sandbox_id, touch)
        try:
            return await asyncio.wait_for(channel.call(method, params), CALL_TIMEOUT)
        except asyncio.TimeoutError:
            raise SandboxUnavailable(
                f"sandbox {sandbox_id} did not answer {method} within "
                f"{CALL_TIMEOUT:.0f} s: it is frozen, hung or overloaded"
            )
        except AgentCallError as exc:
            raise translate_agent_error(exc) from None
        except ChannelClosed as exc:
            why = await self.diagnose(self.record(sandbox_id))
            self.check_later(sandbox_id)
            raise SandboxUnavailable(f"sandbox {sandbox_id}: {exc}{why}") from None

    async def open_port(self, sandbox_id: str, port: int) -> Tunnel:
        """A byte pipe to TCP ``port`` on the sandbox's loopback, through its agent."""
        return await Tunnel.open(await self.channel(sandbox_id), sandbox_id, port)

    async def diagnose(self, record: SandboxRecord) -> str:
        """Why a sandbox stopped answering, if its cgroup can tell (gVisor's whole sandbox
        dies when it hits its memory or pids limit); "" if it cannot."""
        try:
            stats = await self.drivers[record.tier].stats(record.spec)
        except (DriverError, OSError):
            return ""
        if stats.oom_kills:
            return (
                f" (out of memory: the sandbox reached its memory limit of "
                f"{record.resources.memory_mb} MiB and the kernel killed it)"
            )
        if stats.pids_limit_hits:
            return (
                f" (process limit: the sandbox reached its limit of {record.resources.pids} "
                f"processes and threads, and could not go on)"
            )
        return ""

"""The engine: creates, tracks, limits and removes the sandboxes of one host.

It owns the host side of every sandbox: the data directory, the runtime drivers, the agent
channels and the wall-clock timers. Its state lives on disk (one ``state.json`` per sandbox), so
a restarted engine re-attaches to what still runs and removes what is expired or orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from .. import agent
from ..config import default_images_dir
from ..images import ImageError, ImageStore
from ..net import NetConfig, NetError, NetworkManager, NetworkPolicy, PolicyError
from ..runtimes import hostops
from ..runtimes.base import DriverError, Resources, RuntimeDriver, RuntimeState, SandboxSpec
from ..runtimes.channel import AgentCallError, AgentChannel, ChannelClosed, Data, End
from ..runtimes.qemu import QemuDriver
from ..runtimes.runc import RuncDriver
from ..runtimes.runsc import RunscDriver
from .errors import Conflict, EngineError, InvalidRequest, SandboxNotFound, SandboxUnavailable
from .lifecycle import Lifecycle, check_auto_archive, check_options
from .process import KEEPALIVE, ProcessRun, translate_agent_error
from .pool import WarmPool
from .ports import Tunnel
from .records import SandboxRecord
from .volumes import Volumes, check_mount_path

TIERS: dict[str, type[RuntimeDriver]] = {"container": RuncDriver, "gvisor": RunscDriver,
                                          "microvm": QemuDriver}


def default_pool_size() -> dict[str, int]:
    """``$STOCKADE_POOL_SIZE`` warm sandboxes for each container tier (default 1)."""
    size = int(os.environ.get("STOCKADE_POOL_SIZE", "1"))
    return {"container": size, "gvisor": size}


#: The longest one request/response call to an agent may take (a recursive remove of a huge
#: tree is the slowest legitimate one).
CALL_TIMEOUT = 120.0
#: How long a starting engine waits for the data directory's lock: a supervisor may restart the
#: engine while its killed predecessor's last file descriptors are still being closed.
LOCK_WAIT = 10.0


async def _take_lock(path: Path) -> Any:
    """Open and exclusively lock ``path``, waiting up to :data:`LOCK_WAIT` seconds for it."""
    lock_file = open(path, "w")
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock_file
        except BlockingIOError:
            if time.monotonic() > deadline:
                holders = hostops.lock_holders(path)
                lock_file.close()
                raise EngineError(f"another engine is using {path.parent} "
                                  f"(its lock is held by {holders or 'an unknown process'})") from None
            await asyncio.sleep(0.1)

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


def new_id() -> str:
    """An opaque sandbox id that is also a valid hostname."""
    return "sb" + secrets.token_hex(9)


class Engine:
    """All sandboxes of one host. Use ``async with Engine(config) as engine``."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.sandbox_dir = config.data_dir / "sandboxes"
        self.images = ImageStore(config.images_dir or default_images_dir(config.data_dir))
        self.net = NetworkManager(config.data_dir, config.network)
        self.drivers: dict[str, RuntimeDriver] = {
            tier: cls(config.data_dir, self.images, config.agent_dir)  # type: ignore[call-arg]
            for tier, cls in TIERS.items()}
        self._records: dict[str, SandboxRecord] = {}
        self._channels: dict[str, AgentChannel] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock_file: Any = None
        self.pool = WarmPool(self, config.pool_size)
        self.lifecycle = Lifecycle(self)
        self.volumes = Volumes(config.data_dir)

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
        self._lock_file = await _take_lock(self.config.data_dir / "engine.lock")
        await self.recover()
        if self.images.exists(self.config.default_template):
            self.pool.fill()

    async def close(self, kill_all: bool = False) -> None:
        """Stop timers and close channels; sandboxes keep running unless ``kill_all``.

        Warm (unclaimed) sandboxes are always removed: nobody is waiting for them.
        """
        await self.pool.drain()
        if kill_all:
            await asyncio.gather(*(self.kill(i) for i in list(self._records)),
                                 return_exceptions=True)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for channel in self._channels.values():
            await channel.aclose()
        self._channels.clear()
        for task in list(self._tasks):
            task.cancel()
        await self.net.close()
        await self.volumes.close()
        if self._lock_file:
            self._lock_file.close()
            self._lock_file = None

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
            alive = (driver is not None and record.state == "running"
                     and record.expires_at > now
                     and await driver.state(record.spec) == RuntimeState.RUNNING)
            if alive or await self.lifecycle.recover(record):
                self._records[record.id] = record
                self._arm_timer(record)
            else:
                await self._destroy_unknown(directory)
        for tier, driver in self.drivers.items():
            for orphan in await driver.known_ids() - set(self._records):
                await self._destroy_unknown(self.sandbox_dir / orphan)
        parent = hostops.cgroup_parent(self.config.data_dir)
        for d in hostops.cgroup_dirs(parent):
            for sub in d.iterdir():
                if sub.is_dir() and sub.name not in self._records:
                    hostops.remove_cgroup(f"{parent}/{sub.name}")
        await self.net.recover({i for i, r in self._records.items() if r.network is not None})

    async def _destroy_unknown(self, directory: Path) -> None:
        spec = SandboxSpec(id=directory.name, image="", directory=directory)
        for driver in self.drivers.values():
            with contextlib.suppress(DriverError, OSError):
                await driver.destroy(spec)
        with contextlib.suppress(NetError, OSError):
            await self.net.detach(directory.name)

    # -- lifecycle ---------------------------------------------------------------------------
    async def create(self, *, isolation: str = "container", template: str | None = None,
                     timeout: float | None = None, envs: dict[str, str] | None = None,
                     metadata: dict[str, str] | None = None, cpu: float | None = None,
                     memory_mb: int | None = None, disk_mb: int | None = None,
                     pids: int | None = None, network: Any = "none",
                     persistence: str = "ephemeral", on_timeout: str = "kill",
                     auto_delete: float | None = None,
                     volumes: dict[str, Any] | None = None,
                     auto_archive: float | None = None) -> dict[str, Any]:
        """Create and start a sandbox; return its public description.

        ``persistence``, ``on_timeout``, ``auto_delete`` and ``auto_archive``: see
        lifecycle.py; ``volumes`` maps
        a mount path to a volume name or ``{"volume": name, "read_only": bool}``.

        ``network`` is ``"none"`` (loopback only) or an egress policy (docs/network.md)."""
        policy = self._policy(network)
        auto_delete = check_options(persistence, on_timeout, auto_delete)
        auto_archive = check_auto_archive(persistence, auto_archive)
        mounts = await self._volume_mounts(volumes or {})
        driver = self.drivers.get(isolation)
        if driver is None:
            raise InvalidRequest(f"unknown isolation {isolation!r}; choose one of "
                                 f"{', '.join(self.drivers)}")
        template = template or self.config.default_template
        if not self.images.exists(template):
            raise InvalidRequest(f"no template {template!r} on this host; build it with "
                                 f"'stockade image build' or see 'stockade image ls'")
        if self.images.get(template).python is None:
            raise InvalidRequest(f"template {template!r} has no python3, which the sandbox agent "
                                 f"needs; install python3 in it (any version 3.8 or later)")
        defaults = self.config.default_resources
        try:
            resources = Resources(cpu=cpu or defaults.cpu, memory_mb=memory_mb or defaults.memory_mb,
                                  disk_mb=disk_mb or defaults.disk_mb, pids=pids or defaults.pids)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        timeout = self._check_timeout(self.config.default_timeout if timeout is None else timeout)
        record = None
        if (template == self.config.default_template and resources == defaults and policy is None
                and not mounts):
            record = self.pool.take(isolation)
        if record is None:
            record = self.new_record(isolation, template, resources)
            record.volumes = mounts
            if policy is not None:
                self._plan_network(record, policy)
                envs = {**self.net.ca_env(), **(envs or {})}
            await self.boot(record, policy)
        record.timeout, record.envs, record.metadata = timeout, dict(envs or {}), dict(metadata or {})
        record.persistence, record.on_timeout = persistence, on_timeout
        record.auto_delete, record.auto_archive = auto_delete, auto_archive
        record.state = "running"
        record.expires_at = time.time() + timeout
        record.save()
        self._records[record.id] = record
        self._arm_timer(record)
        return record.public()

    @staticmethod
    def _policy(network: Any) -> NetworkPolicy | None:
        try:
            return NetworkPolicy.parse(network)
        except PolicyError as exc:
            raise InvalidRequest(f"network: {exc}") from None

    def _plan_network(self, record: SandboxRecord, policy: NetworkPolicy) -> None:
        """Record where the sandbox's network will be (the namespace is made during boot)."""
        ca = self.config.network.ca_bundle
        record.network = policy.public()
        record.attachment = {"netns": str(self.net.netns_path(record.id)),
                             "resolv_conf": str(self.net.resolv_conf(record.id)),
                             "ca_bundle": str(ca) if ca else ""}

    async def _attach_network(self, record: SandboxRecord, policy: NetworkPolicy) -> None:
        try:
            await self.net.attach(record.id, policy)
        except NetError as exc:
            raise SandboxUnavailable(f"could not set up the sandbox's network: {exc}") from None

    async def set_network(self, sandbox_id: str, network: Any) -> dict[str, Any]:
        """Replace a networked sandbox's egress policy; new connections follow it at once."""
        record = self.record(sandbox_id)
        policy = self._policy(network) or NetworkPolicy()
        if record.network is None:
            raise Conflict(f"sandbox {sandbox_id} was created with network='none' and has no "
                           f"network interface; create it with a policy (even an empty one, "
                           f"{{'allow_out': []}}) to change it later")
        async with self._lock(sandbox_id):
            try:
                await self.net.set_policy(sandbox_id, policy)
            except NetError as exc:
                raise SandboxUnavailable(f"could not change the network policy: {exc}") from None
            record.network = policy.public()
            record.save()
        return record.public()

    async def _volume_mounts(self, volumes: dict[str, Any]) -> list[dict[str, Any]]:
        """Resolve ``{path: name or {"volume", "read_only"}}`` to the record's mount list."""
        mounts = []
        for path, what in volumes.items():
            spec = {"volume": what} if isinstance(what, str) else dict(what)
            if not isinstance(spec.get("volume"), str):
                raise InvalidRequest(f"volume for {path!r} must be a name or "
                                     f"{{'volume': name, 'read_only': bool}}")
            mounts.append({"volume": spec["volume"], "path": check_mount_path(path),
                           "read_only": bool(spec.get("read_only", False)),
                           "source": str(await self.volumes.source(spec["volume"]))})
        if len({m["path"] for m in mounts}) != len(mounts):
            raise InvalidRequest("two volumes are mounted at the same path")
        return mounts

    def volume_users(self, name: str) -> list[str]:
        """Ids of the sandboxes (in any state) that mount volume ``name``."""
        return sorted(r.id for r in self._records.values()
                      if any(v["volume"] == name for v in r.volumes))

    def new_record(self, tier: str, template: str, resources: Resources) -> SandboxRecord:
        """A record for a sandbox not created yet."""
        sandbox_id = new_id()
        return SandboxRecord(id=sandbox_id, tier=tier, image=template, resources=resources,
                             directory=self.sandbox_dir / sandbox_id,
                             timeout=self.config.default_timeout)

    async def boot(self, record: SandboxRecord, network: NetworkPolicy | None = None) -> None:
        """Create and start the sandbox of ``record`` (wiring its ``network`` meanwhile); on
        any failure leave nothing behind."""
        driver = self.drivers[record.tier]
        async with self._lock(record.id):
            try:
                steps = [driver.create(record.spec)]
                if network is not None:
                    steps.append(self._attach_network(record, network))
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

    def _check_timeout(self, timeout: float) -> float:
        if not 1 <= timeout <= self.config.max_timeout:
            raise InvalidRequest(f"timeout must be between 1 and {self.config.max_timeout:.0f} "
                                 f"seconds, not {timeout}")
        return float(timeout)

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def _arm_timer(self, record: SandboxRecord) -> None:
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

    async def get(self, sandbox_id: str) -> dict[str, Any]:
        return self.record(sandbox_id).public()

    async def list(self) -> list[dict[str, Any]]:
        return [r.public() for r in sorted(self._records.values(), key=lambda r: r.created_at)]

    async def set_timeout(self, sandbox_id: str, timeout: float) -> dict[str, Any]:
        """Expire ``timeout`` seconds from now instead."""
        record = self.record(sandbox_id)
        record.timeout = self._check_timeout(timeout)
        record.expires_at = time.time() + record.timeout
        record.save()
        self._arm_timer(record)
        return record.public()

    async def kill(self, sandbox_id: str) -> None:
        """Kill the sandbox and remove every trace of it."""
        record = self.record(sandbox_id)
        async with self._lock(sandbox_id):
            if sandbox_id not in self._records:
                return
            await self.lifecycle.settled(sandbox_id)
            if timer := self._timers.pop(sandbox_id, None):
                timer.cancel()
            if channel := self._channels.pop(sandbox_id, None):
                await channel.aclose()
            await self.drivers[record.tier].destroy(record.spec)
            if record.network is not None:
                await self.net.detach(sandbox_id)
            del self._records[sandbox_id]
        self._locks.pop(sandbox_id, None)

    async def stats(self, sandbox_id: str) -> dict[str, Any]:
        record = self.record(sandbox_id)
        stats = await self.drivers[record.tier].stats(record.spec)
        return {"memory_bytes": stats.memory_bytes, "memory_limit_bytes": stats.memory_limit_bytes,
                "cpu_seconds": stats.cpu_seconds, "pids": stats.pids, "oom_kills": stats.oom_kills}

    # -- talking to the agent -----------------------------------------------------------------
    async def channel(self, sandbox_id: str) -> AgentChannel:
        """The (cached) channel to a sandbox's agent."""
        record = self.record(sandbox_id)
        if record.state != "running":
            raise Conflict(f"sandbox {sandbox_id} is {record.state}; connect to it (which "
                           f"resumes or starts it) before using it")
        channel = self._channels.get(sandbox_id)
        if channel is None or channel.closed:
            try:
                channel = await self.drivers[record.tier].connect(record.spec)
            except DriverError as exc:
                raise SandboxUnavailable(f"{exc}{await self._diagnose(record)}") from None
            self._channels[sandbox_id] = channel
        return channel

    @staticmethod
    async def _open(channel: AgentChannel, sandbox_id: str, method: str,
                    params: dict[str, Any]) -> Any:
        """Open a stream; an agent that hung up is SandboxUnavailable, not a crash."""
        try:
            return await channel.open(method, params)
        except (ChannelClosed, ConnectionError) as exc:
            raise SandboxUnavailable(f"sandbox {sandbox_id}: {exc}") from None

    async def call(self, sandbox_id: str, method: str, params: dict[str, Any]) -> Any:
        """One request/response call to the agent, errors translated."""
        channel = await self.channel(sandbox_id)
        try:
            return await asyncio.wait_for(channel.call(method, params), CALL_TIMEOUT)
        except asyncio.TimeoutError:
            raise SandboxUnavailable(f"sandbox {sandbox_id} did not answer {method} within "
                                     f"{CALL_TIMEOUT:.0f} s: it is frozen, hung or overloaded")
        except AgentCallError as exc:
            raise translate_agent_error(exc) from None
        except ChannelClosed as exc:
            raise SandboxUnavailable(
                f"sandbox {sandbox_id}: {exc}{await self._diagnose(self.record(sandbox_id))}") from None

    async def start_process(self, sandbox_id: str, params: dict[str, Any]) -> ProcessRun:
        """Start a process; iterate the result for its events."""
        record = self.record(sandbox_id)
        params = dict(params)
        config = self._image_config(record.image)  # a template's ENV, WORKDIR and USER
        params["env"] = {**config.get("env", {}), **record.envs, **(params.get("env") or {})}
        if config.get("user") and not params.get("user"):
            params["user"] = config["user"]
        if config.get("workdir") and not params.get("cwd"):
            params["cwd"] = config["workdir"]
        params.setdefault("keepalive", KEEPALIVE)
        channel = await self.channel(sandbox_id)
        driver = self.drivers[record.tier]
        oom_before = (await driver.stats(record.spec)).oom_kills
        stream = await self._open(channel, sandbox_id, "process.start", params)
        return ProcessRun(stream, oom_check=lambda: self._oom_since(record, oom_before),
                          diagnose=lambda: self._diagnose(record),
                          running=lambda: record.state == "running")

    def _image_config(self, image: str) -> dict[str, Any]:
        try:
            return self.images.get(image).config or {}
        except ImageError:
            return {}

    async def connect_process(self, sandbox_id: str, selector: dict[str, Any]) -> ProcessRun:
        """Follow a running process (by pid or tag) from now on."""
        record = self.record(sandbox_id)
        channel = await self.channel(sandbox_id)
        stream = await self._open(channel, sandbox_id, "process.connect",
                                  {**selector, "keepalive": KEEPALIVE})
        return ProcessRun(stream, diagnose=lambda: self._diagnose(record),
                          running=lambda: record.state == "running")

    async def open_port(self, sandbox_id: str, port: int) -> Tunnel:
        """A byte pipe to TCP ``port`` on the sandbox's loopback, through its agent."""
        return await Tunnel.open(await self.channel(sandbox_id), sandbox_id, port)

    async def _oom_since(self, record: SandboxRecord, before: int) -> bool:
        return (await self.drivers[record.tier].stats(record.spec)).oom_kills > before

    async def _diagnose(self, record: SandboxRecord) -> str:
        """Why a sandbox stopped answering, if its cgroup can tell (gVisor's whole sandbox
        dies when it hits its memory or pids limit); "" if it cannot."""
        try:
            stats = await self.drivers[record.tier].stats(record.spec)
        except (DriverError, OSError):
            return ""
        if stats.oom_kills:
            return (f" (out of memory: the sandbox reached its memory limit of "
                    f"{record.resources.memory_mb} MiB and the kernel killed it)")
        if stats.pids_limit_hits:
            return (f" (process limit: the sandbox reached its limit of {record.resources.pids} "
                    f"processes and threads, and could not go on)")
        return ""

    async def send_stdin(self, sandbox_id: str, selector: dict[str, Any], data: bytes) -> None:
        channel = await self.channel(sandbox_id)
        stream = await self._open(channel, sandbox_id, "process.input", selector)
        try:
            await stream.send(data)
            await stream.close_send()
            await stream.result()
        except AgentCallError as exc:
            raise translate_agent_error(exc) from None

    async def read_file(self, sandbox_id: str, path: str, user: str | None) -> AsyncIterator[bytes]:
        """Stream a file's bytes. The first step (opening) raises if the file is missing."""
        channel = await self.channel(sandbox_id)
        stream = await self._open(channel, sandbox_id, "fs.read", {"path": path, "user": user})
        first = await stream.next()
        if isinstance(first, End) and not first.ok:
            raise translate_agent_error(AgentCallError(first.code, first.message))

        async def chunks() -> AsyncIterator[bytes]:
            item: Any = first
            try:
                while True:
                    if isinstance(item, Data):
                        yield item.data
                    elif isinstance(item, End):
                        if not item.ok:
                            raise translate_agent_error(AgentCallError(item.code, item.message))
                        return
                    item = await stream.next()
            finally:
                await stream.cancel()

        return chunks()

    async def write_file(self, sandbox_id: str, path: str, user: str | None,
                         chunks: AsyncIterator[bytes], mode: int | None = None) -> dict[str, Any]:
        """Write a file from a stream of chunks; replaced atomically once complete."""
        channel = await self.channel(sandbox_id)
        stream = await self._open(channel, sandbox_id, "fs.write",
                                  {"path": path, "user": user, "mode": mode})
        try:
            async for chunk in chunks:
                if stream.done:
                    break
                await stream.send(chunk)
            if not stream.done:
                await stream.close_send()
            result: dict[str, Any] = await stream.result()
            return result
        except AgentCallError as exc:
            raise translate_agent_error(exc) from None
        except ChannelClosed as exc:
            raise SandboxUnavailable(f"sandbox {sandbox_id}: {exc}") from None
        except BaseException:
            await stream.cancel()
            raise


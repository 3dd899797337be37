"""The runtime-driver interface: the only thing above the runtimes that knows a tier exists.

A driver turns a :class:`SandboxSpec` into a running sandbox whose agent is reachable through
:meth:`RuntimeDriver.connect`, and takes it apart again. Verbs mirror the OCI lifecycle::

    create -> start -> (connect, stats)* -> [pause -> resume]* -> stop -> destroy

Every verb is idempotent where that makes sense (``stop`` and ``destroy`` of something already
gone succeed), so the engine can retry clean-up after a crash without bookkeeping.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..agent import protocol
from .channel import AgentChannel

#: Where the agent package is mounted inside every sandbox, read-only.
AGENT_MOUNT = "/.stockade/agent"
#: Where the agent listens inside every container-tier sandbox.
AGENT_SOCKET_DIR = "/.stockade/run"


@dataclass(frozen=True)
class Resources:
    """Limits of one sandbox. Always set: there is no unlimited."""

    cpu: float = 1.0
    memory_mb: int = 512
    pids: int = 512
    disk_mb: int = 2048

    def __post_init__(self) -> None:
        if not 0.05 <= self.cpu <= 64:
            raise ValueError(f"cpu must be between 0.05 and 64, not {self.cpu}")
        if not 32 <= self.memory_mb <= 262144:
            raise ValueError(f"memory_mb must be between 32 and 262144, not {self.memory_mb}")
        if not 8 <= self.pids <= 65536:
            raise ValueError(f"pids must be between 8 and 65536, not {self.pids}")
        if not 64 <= self.disk_mb <= 1048576:
            raise ValueError(f"disk_mb must be between 64 and 1048576, not {self.disk_mb}")


@dataclass(frozen=True)
class NetworkAttachment:
    """A network the engine prepared: join ``netns`` instead of an empty one of its own."""

    netns: Path  # a named network namespace (/run/netns/...)
    resolv_conf: Path  # bind-mounted read-only at /etc/resolv.conf
    ca_bundle: Path | None = None  # bind-mounted read-only over the system CA bundle


@dataclass(frozen=True)
class VolumeMount:
    """A host directory (a mounted volume) bind-mounted into the sandbox."""

    source: Path
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class SandboxSpec:
    """What a driver needs to run one sandbox."""

    id: str
    image: str
    resources: Resources = field(default_factory=Resources)
    directory: Path = Path()  # the sandbox's own state directory, owned by the driver
    network: NetworkAttachment | None = None  # None: loopback only
    volumes: tuple[VolumeMount, ...] = ()

    @property
    def hostname(self) -> str:
        return self.id


class RuntimeState(str, enum.Enum):
    """What the runtime reports about a sandbox."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"  # created but no process (or exited)
    ABSENT = "absent"  # the runtime does not know it


@dataclass(frozen=True)
class Stats:
    """Resource use of one sandbox, from its cgroup."""

    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    cpu_seconds: float = 0.0
    pids: int = 0
    oom_kills: int = 0
    pids_limit_hits: int = 0  # forks the pids limit refused


class DriverError(Exception):
    """A runtime failed; the message says which command and what it printed."""


class ProtocolMismatch(DriverError):
    """The sandbox's agent speaks another protocol version than this host."""


async def greet(channel: AgentChannel, timeout: float) -> None:
    """Say hello to a freshly connected agent and refuse one of another protocol version."""
    found = await asyncio.wait_for(channel.call("hello"), timeout)
    version = found.get("protocol") if isinstance(found, dict) else None
    if version != protocol.PROTOCOL_VERSION:
        await channel.aclose()
        raise ProtocolMismatch(
            f"the sandbox's agent speaks protocol {version!r}, this host speaks "
            f"{protocol.PROTOCOL_VERSION}: the template carries an agent from another Stockade "
            f"version, or the agent mount is stale; rebuild the template or upgrade the host")


class NotSupported(DriverError):
    """This tier cannot do that (on this host)."""


class RuntimeDriver(abc.ABC):
    """One isolation tier."""

    tier: ClassVar[str]

    @abc.abstractmethod
    async def create(self, spec: SandboxSpec) -> None:
        """Prepare the sandbox (disk, root filesystem, bundle) without starting it."""

    @abc.abstractmethod
    async def start(self, spec: SandboxSpec) -> None:
        """Start the sandbox; returns once the agent answers."""

    @abc.abstractmethod
    async def connect(self, spec: SandboxSpec) -> AgentChannel:
        """Open a channel to the running sandbox's agent."""

    @abc.abstractmethod
    async def state(self, spec: SandboxSpec) -> RuntimeState:
        """What the runtime says the sandbox is doing."""

    @abc.abstractmethod
    async def stats(self, spec: SandboxSpec) -> Stats:
        """Resource use so far."""

    async def oom_kills(self, spec: SandboxSpec) -> int:
        """Processes the OOM killer killed so far (``stats().oom_kills``, possibly cheaper)."""
        return (await self.stats(spec)).oom_kills

    async def pause(self, spec: SandboxSpec) -> None:
        """Freeze every process, keeping memory."""
        raise NotSupported(f"the {self.tier} tier cannot pause")

    async def resume(self, spec: SandboxSpec) -> None:
        """Undo :meth:`pause`."""
        raise NotSupported(f"the {self.tier} tier cannot resume")

    #: Whether :meth:`checkpoint` saves memory to disk (else pausing uses the freezer).
    checkpoints: ClassVar[bool] = False

    def cannot_pause(self, spec: SandboxSpec) -> str | None:
        """Why this sandbox's processes and memory cannot be saved, or None if they can."""
        return None

    async def checkpoint(self, spec: SandboxSpec, image_dir: Path) -> None:
        """Save every process and its memory to ``image_dir``; the sandbox no longer runs
        (:meth:`stop` releases what the runtime keeps of it, which may take a while)."""
        raise NotSupported(f"the {self.tier} tier cannot checkpoint")

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> None:
        """Start the sandbox again from :meth:`checkpoint`'s ``image_dir``."""
        raise NotSupported(f"the {self.tier} tier cannot restore")

    def layer_file(self, spec: SandboxSpec) -> Path:
        """The one file holding the sandbox's writable layer (its disk), which archiving
        compresses and removes while the sandbox is stopped; :meth:`reopen` needs it back."""
        raise NotSupported(f"the {self.tier} tier cannot archive")

    async def reopen(self, spec: SandboxSpec) -> None:
        """Prepare a stopped sandbox's kept disk for :meth:`start` (never deletes anything)."""
        raise NotSupported(f"the {self.tier} tier cannot restart a stopped sandbox")

    @abc.abstractmethod
    async def stop(self, spec: SandboxSpec) -> None:
        """Kill every process of the sandbox; keep its files."""

    @abc.abstractmethod
    async def destroy(self, spec: SandboxSpec) -> None:
        """Remove every trace of the sandbox from the host. Safe to call repeatedly."""

    @abc.abstractmethod
    async def known_ids(self) -> set[str]:
        """Ids of every sandbox this runtime holds on this host (for orphan collection)."""

    #: Whether one :meth:`checkpoint` may be restored into several new sandboxes, so that a
    #: fork keeps processes and memory; else a fork copies the filesystem only (docs/fork.md).
    forks_memory: ClassVar[bool] = False
    #: Whether the sandbox's own changes are an overlay upper directory on the host
    #: (``<directory>/disk/upper``) that a fork can freeze into a shared read-only layer.
    forks_files: ClassVar[bool] = False

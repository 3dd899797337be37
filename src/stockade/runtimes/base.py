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
from typing import Any, ClassVar

from ..agent import protocol
from ..host import HostError
from ..host import Stats as Stats  # the driver interface reports what a sandbox uses
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


#: A runtime or a host operation failed; the message says which command and what it printed.
#: The host package's own error, so that one ``except DriverError`` catches both.
DriverError = HostError


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
            f"version, or the agent mount is stale; rebuild the template or upgrade the host"
        )


class NotSupported(DriverError):
    """This tier cannot do that (on this host)."""


@dataclass(frozen=True)
class Capabilities:
    """What a tier can do, declared as data: the engine reads these instead of asking which
    tier it has, and docs/tiers.md's table is checked against them (tests/unit/runtimes).
    Where one is False, the API answers 409 ``unsupported`` naming the tier and the field."""

    #: Pause keeps every process and its memory (in RAM at least), resumed where it was.
    memory_pause: bool = False
    #: Pause saves that memory to a file: the paused sandbox holds no RAM and outlives an engine
    #: restart or a host reboot (else it stays frozen in RAM).
    pause_to_disk: bool = False
    #: Pause to a file works with volumes attached (else such a sandbox pauses in RAM).
    pause_to_disk_with_volumes: bool = False
    #: Pause to a file works with a network attached (else such a sandbox pauses in RAM).
    pause_to_disk_with_network: bool = False
    #: Interactive terminals (a PTY) for processes.
    pty: bool = False
    #: Named volumes mounted into the sandbox.
    volumes: bool = False
    #: Egress network policies (the sandbox's own address behind the host's rules).
    network_policy: bool = False
    #: Stop keeps the filesystem and start boots it again (persistence="workspace").
    workspace: bool = False
    #: A stopped workspace's disk compressed to one archive (start restores it).
    archive: bool = False
    #: A sandbox's files saved as a new template (snapshot).
    files_snapshot: bool = False
    #: New sandboxes start from a booted memory snapshot instead of booting (fast start).
    memory_snapshot_start: bool = False
    #: ... with a network policy attached too.
    snapshot_start_with_network: bool = False
    #: ... with volumes attached too.
    snapshot_start_with_volumes: bool = False
    #: Started sandboxes may be kept ready in a warm pool.
    warm_pool: bool = False
    #: Fork copies the files copy-on-write: the sandbox's own changes are an overlay upper
    #: directory on the host (``<directory>/disk/upper``) frozen into a shared layer.
    forks_files: bool = False
    #: A running sandbox's CPU and memory limits can be raised in place (else they change only
    #: while it is stopped, for its next start).
    hot_resize: bool = False
    #: Fork also copies processes and memory: one :meth:`checkpoint` restores into several
    #: new sandboxes (docs/fork.md); else a fork's copies boot fresh on the copied files.
    forks_memory: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every capability's name, in declaration order."""
        return tuple(cls.__dataclass_fields__)


class RuntimeDriver(abc.ABC):
    """One isolation tier."""

    tier: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: The sandbox's own kernel enforces its memory and pids limits on its commands (a microVM
    #: guest, whose agent keeps them in a cgroup of their own: agent/limits.py), while the
    #: host's cgroup holds the runtime as a whole. The engine then adds what the agent's
    #: ``sys.stats`` says those limits killed or refused to :meth:`stats` (engine/usage.py).
    limits_inside: ClassVar[bool] = False

    @property
    def layer_uid_base(self) -> int:
        """Host uid of root inside the sandbox when its files on the host are uid-shifted (the
        container tier's user namespace); 0 when they hold the sandbox's own ids."""
        return 0

    def pause_mode(self, spec: SandboxSpec) -> str | None:
        """How :meth:`pause` of ``spec`` keeps its memory, from the declared capabilities:
        ``"checkpoint"`` (to a file, :meth:`checkpoint`), ``"freezer"`` (in RAM, :meth:`pause`)
        or None (it cannot be paused)."""
        caps = self.capabilities
        if (
            caps.pause_to_disk
            and (caps.pause_to_disk_with_volumes or not spec.volumes)
            and (caps.pause_to_disk_with_network or spec.network is None)
        ):
            return "checkpoint"
        return "freezer" if caps.memory_pause else None

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

    async def update_limits(self, spec: SandboxSpec) -> None:
        """Apply ``spec.resources``' CPU and memory to the running sandbox (``hot_resize``)."""
        raise NotSupported(f"the {self.tier} tier cannot change a running sandbox's limits")

    async def pause(self, spec: SandboxSpec) -> None:
        """Freeze every process, keeping memory."""
        raise NotSupported(f"the {self.tier} tier cannot pause")

    async def resume(self, spec: SandboxSpec) -> None:
        """Undo :meth:`pause`."""
        raise NotSupported(f"the {self.tier} tier cannot resume")

    def after_resume(self, spec: SandboxSpec) -> dict[str, Any] | None:
        """``sys.seed`` parameters the engine sends the agent once :meth:`resume` returned (on
        the sandbox's open channel), or None: what a sandbox must renew after being stopped."""
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

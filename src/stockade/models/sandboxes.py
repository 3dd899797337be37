"""Sandboxes: the spec a caller asks for, what it gets back, and what it uses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ._base import Request, Result
from .secrets import EnvName, SecretName
from .volumes import VolumeName

Isolation = Literal["container", "gvisor", "microvm"]
Persistence = Literal["ephemeral", "workspace"]
OnTimeout = Literal["kill", "pause", "stop"]
#: The states a sandbox moves through (docs/persistence.md); "killed" only in end reasons.
State = Literal["creating", "running", "paused", "stopped", "archived"]
Interval = Field(default=None, ge=1, le=365 * 86400)


class NetworkPolicy(Request):
    """Egress rules (docs/network.md): CIDRs and host names (``*.`` wildcards) to allow, CIDRs
    to deny; everything else is denied, and the host, link-local, metadata and other sandboxes
    always are."""

    allow_out: list[str] = Field(default_factory=list, max_length=256)
    deny_out: list[str] = Field(default_factory=list, max_length=256)
    max_connections: int | None = Field(default=None, ge=1, le=65536)
    bandwidth_mbit: int | None = Field(default=None, ge=1, le=100000)


class VolumeMount(Request):
    """Volume ``volume`` mounted at ``path`` inside the sandbox."""

    volume: VolumeName
    path: str = Field(min_length=2, max_length=4096, pattern=r"^/")
    read_only: bool = False


class SandboxSpec(Request):
    """Everything a new sandbox is made from. Left-out fields take the engine's defaults
    (template ``base``, its configured resources and timeout).

    ``volumes`` may also be given as ``{path: name}`` or ``{path: {"volume", "read_only"}}``;
    ``network`` as ``"none"`` (loopback only, the default) or a :class:`NetworkPolicy`."""

    isolation: Isolation = "container"
    template: str | None = Field(default=None, min_length=1, max_length=64)
    timeout: float | None = Field(default=None, ge=1, le=86400)
    envs: dict[str, str] = Field(default_factory=dict, max_length=256)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    cpu: float | None = Field(default=None, ge=0.05, le=64)
    memory_mb: int | None = Field(default=None, ge=32, le=262144)
    disk_mb: int | None = Field(default=None, ge=64, le=1048576)
    pids: int | None = Field(default=None, ge=8, le=65536)
    network: NetworkPolicy | None = None
    persistence: Persistence = "ephemeral"
    on_timeout: OnTimeout = "kill"
    auto_delete: float | None = Field(
        default=None, ge=1, le=365 * 86400, description="seconds a paused or stopped sandbox is kept"
    )
    auto_archive: float | None = Field(
        default=None,
        ge=1,
        le=365 * 86400,
        description="archive a stopped workspace this many seconds after it stopped (default: never)",
    )
    ttl: float | None = Field(
        default=None,
        ge=1,
        le=365 * 86400,
        description="delete the sandbox this many seconds after its creation, whatever its state "
        "(paused, stopped and archived too); default: no such limit",
    )
    volumes: list[VolumeMount] = Field(default_factory=list, max_length=32)
    #: The caller's secrets (docs/secrets.md) as ``{ENV_VAR: secret name}``, or a list of
    #: names (each its own variable): the sandbox sees a placeholder in each variable;
    #: ``network`` must allow the hosts they are bound to.
    secrets: dict[EnvName, SecretName] = Field(default_factory=dict, max_length=32)
    #: Resume (paused) or start (stopped, archived) the sandbox on the next request that uses
    #: it, instead of answering 409 (docs/persistence.md, "Idle policy").
    auto_resume: bool = False
    #: ``timeout`` counts from the sandbox's last activity (a request that uses it, a running
    #: command, an open terminal) instead of from its creation or last ``set_timeout``.
    idle_timeout: bool = False

    @field_validator("network", mode="before")
    @classmethod
    def _none_is_loopback(cls, value: Any) -> Any:
        return None if value == "none" else value

    @field_validator("secrets", mode="before")
    @classmethod
    def _list_form(cls, value: Any) -> Any:
        if isinstance(value, list):
            if len(set(map(str, value))) != len(value):
                raise ValueError("a secret is named twice")
            return {name: name for name in value}
        return value

    @field_validator("volumes", mode="before")
    @classmethod
    def _mapping_form(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return [
            {"path": path, "volume": what}
            if isinstance(what, str)
            else {"path": path, **what}
            if isinstance(what, dict)
            else what
            for path, what in value.items()
        ]

    @field_validator("volumes")
    @classmethod
    def _distinct_paths(cls, value: list[VolumeMount]) -> list[VolumeMount]:
        if len({v.path.rstrip("/") for v in value}) != len(value):
            raise ValueError("two volumes are mounted at the same path")
        return value


class SandboxInfo(Result):
    """A sandbox as the server knows it."""

    id: str
    isolation: str
    template: str
    state: str
    #: Why the sandbox is in its state when the caller did not ask for it: ``"timeout"``
    #: (paused or stopped by ``on_timeout``), ``"checkpoint_corrupt"``, ``"host_restart"``...
    #: Also the latest thing that happened to a running sandbox that nobody asked for:
    #: ``"out_of_memory"`` or ``"pids_limit"`` when one of its processes was killed or refused.
    reason: str | None = None
    #: ``reason`` in words, with details: ``"out of memory (python3)"``.
    message: str | None = None
    cpu: float
    memory_mb: int
    disk_mb: int
    pids: int
    metadata: dict[str, str] = Field(default_factory=dict)
    envs: dict[str, str] = Field(default_factory=dict)
    created_at: float
    expires_at: float
    timeout: float
    #: ``"none"`` (loopback only) or the egress policy.
    network: Literal["none"] | dict[str, Any] = "none"
    persistence: str = "ephemeral"
    on_timeout: str = "kill"
    auto_delete: float | None = None
    auto_archive: float | None = None
    #: When the sandbox is deleted whatever its state (its ``ttl``; None: no such limit).
    delete_at: float | None = None
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)  # names; the values never leave the host
    auto_resume: bool = False
    idle_timeout: bool = False
    #: When the sandbox was last used (a request, a running command, an open terminal).
    last_active_at: float | None = None


#: Why a sandbox ended (``SandboxEnd.reason``): by its owner, by its timeout, by the kernel's
#: out-of-memory killer, by its pids limit, with its host, or by an error.
EndReason = Literal["killed", "timeout", "out_of_memory", "pids_limit", "disk_full", "host_lost", "error"]


class ResizeSpec(Request):
    """New CPU and memory limits for a sandbox (``POST /sandboxes/{id}/resize``): those left
    out keep their value."""

    cpu: float | None = Field(default=None, ge=0.05, le=64)
    memory_mb: int | None = Field(default=None, ge=32, le=262144)


class SandboxEnd(Result):
    """What is kept of a sandbox that ended, and why (``GET /sandboxes/{id}/end``)."""

    id: str
    reason: str
    #: The reason in words: ``"killed by the user"``, ``"out of memory (python3)"``...
    message: str
    ended_at: float
    #: The sandbox as it was when it ended.
    sandbox: SandboxInfo


class SandboxEvent(Result):
    """One lifecycle change of a sandbox (``GET /events``): its new ``state`` and why.

    ``state`` is ``"running"``, ``"paused"``, ``"stopped"``, ``"archived"`` or ``"ended"``;
    ``kind`` is ``"state"`` for a change of state and ``"process"`` for a process of the
    sandbox that the kernel killed or refused (the sandbox keeps its state)."""

    seq: int
    time: float
    sandbox_id: str
    kind: Literal["state", "process"] = "state"
    state: str
    reason: str | None = None
    message: str | None = None


class UsageSample(Result):
    """What a sandbox used at ``time``: CPU (share of one core since the previous sample),
    memory, disk (bytes its writable layer holds) and network (bytes since it started)."""

    time: float
    cpu_percent: float
    cpu_seconds: float
    memory_bytes: int
    memory_limit_bytes: int
    pids: int
    disk_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None


class UsageHistory(Result):
    """A sandbox's recent usage, oldest first, one sample every ``interval`` seconds."""

    interval: float
    items: list[UsageSample]


class SandboxPage(Result):
    items: list[SandboxInfo]
    next_cursor: str | None = None


class SandboxStats(Result):
    """What a sandbox uses now."""

    memory_bytes: int
    memory_limit_bytes: int
    cpu_seconds: float
    pids: int
    oom_kills: int


class EgressEntry(Result):
    """One line of a sandbox's egress log (docs/network.md): a connection through the egress
    proxy, or a DNS question the resolver refused."""

    time: float
    kind: str  # "tls", "http", "tcp" or "dns"
    destination: str | None = None  # "address:port"
    name: str | None = None  # SNI, Host or DNS question; None when none was given
    verdict: Literal["allowed", "denied"]
    reason: str = ""
    bytes_out: int | None = None
    bytes_in: int | None = None
    intercepted: bool = False  # TLS terminated to inject secrets (docs/secrets.md)
    secrets: list[str] | None = None  # names of the secrets injected, never values


class EgressLog(Result):
    """The newest entries of a sandbox's egress log, oldest first."""

    items: list[EgressEntry]

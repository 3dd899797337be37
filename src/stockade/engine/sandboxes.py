"""The sandboxes service: create, inspect, change and end sandboxes (``engine.sandboxes``).

Every method takes and returns typed values from :mod:`stockade.models`; a front end (the native
routes, E2B, Daytona, the CLI, a remote host) translates onto these and nothing else.
"""

from __future__ import annotations

import builtins
import dataclasses

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..models import (
    EgressEntry,
    EgressLog,
    NetworkPolicy,
    ResizeSpec,
    SandboxEnd,
    SandboxEvent,
    SandboxInfo,
    SandboxSpec,
    SandboxStats,
    TemplateInfo,
    UsageHistory,
)
from ..net import NetError, PolicyError
from ..net import NetworkPolicy as EgressPolicy
from ..runtimes.base import DriverError, Resources
from .errors import Conflict, InvalidRequest, SandboxNotFound, SandboxUnavailable, Unsupported
from .lifecycle import MAX_AUTO_DELETE, Lifecycle, check_auto_archive, check_options
from .records import SandboxRecord
from .fork import fork, keeps_memory
from .snapshots import snapshot
from .volumes import check_mount_path

if TYPE_CHECKING:
    from .engine import Engine


def egress_policy(policy: NetworkPolicy | None) -> EgressPolicy | None:
    """The network package's checked policy for a wire policy (None: loopback only)."""
    if policy is None:
        return None
    try:
        return EgressPolicy.parse(policy.model_dump(exclude_none=True))
    except PolicyError as exc:
        raise InvalidRequest(f"network: {exc}") from None


def resolve_resources(spec: SandboxSpec, defaults: Resources) -> Resources:
    """The limits ``spec`` asks for, ``defaults`` filled in (InvalidRequest if out of range)."""
    try:
        return Resources(
            cpu=spec.cpu or defaults.cpu,
            memory_mb=spec.memory_mb or defaults.memory_mb,
            disk_mb=spec.disk_mb or defaults.disk_mb,
            pids=spec.pids or defaults.pids,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


class Sandboxes:
    """The lifecycle of an engine's sandboxes."""

    def __init__(self, engine: "Engine", lifecycle: Lifecycle) -> None:
        self._engine = engine
        self._lifecycle = lifecycle

    # -- create ------------------------------------------------------------------------------
    async def create(self, spec: SandboxSpec, owner: str = "") -> SandboxInfo:
        """Create and start a sandbox from ``spec`` for tenant ``owner`` (who alone sees its
        events and end record); return it running. ``spec.secrets`` name secrets of ``owner``
        (docs/secrets.md)."""
        engine = self._engine
        policy = egress_policy(spec.network)
        secrets, secret_envs = engine.secrets.bind(owner, spec.secrets, policy) if spec.secrets else ({}, {})
        auto_delete = check_options(spec.persistence, spec.on_timeout, spec.auto_delete)
        auto_archive = check_auto_archive(spec.persistence, spec.auto_archive)
        self._check_capabilities(spec, policy is not None)
        mounts = await self._volume_mounts(spec)
        template = spec.template or engine.config.default_template
        if not engine.images.exists(template):
            raise InvalidRequest(
                f"no template {template!r} on this host; build it with "
                f"'stockade image build' or see 'stockade image ls'"
            )
        if engine.images.get(template).python is None:
            raise InvalidRequest(
                f"template {template!r} has no python3, which the sandbox agent "
                f"needs; install python3 in it (any version 3.8 or later)"
            )
        resources = self.resources(spec)
        timeout = engine.check_timeout(
            engine.config.default_timeout if spec.timeout is None else spec.timeout
        )
        envs = dict(spec.envs)
        record = None
        if policy is None and not mounts:
            record = engine.pool.take(engine.pool.key(spec.isolation, template, resources))
        if record is None:
            record = engine.new_record(spec.isolation, template, resources)
            record.volumes = mounts
            record.owner, record.secrets = owner, secrets  # secrets need a policy: never pooled
            if policy is not None:
                self.plan_network(record, policy)
                envs = {**engine.net.ca_env(bool(secrets)), **envs, **secret_envs}
            await engine.boot(record, policy)
        record.owner = owner  # a pooled sandbox is bound to its tenant at the claim
        record.timeout, record.envs, record.metadata = timeout, envs, dict(spec.metadata)
        record.persistence, record.on_timeout = spec.persistence, spec.on_timeout
        record.auto_delete, record.auto_archive = auto_delete, auto_archive
        record.auto_resume = spec.auto_resume
        record.idle_timeout, record.last_active_at = spec.idle_timeout, time.time()
        record.state = "running"
        record.expires_at = time.time() + timeout
        record.delete_at = record.created_at + spec.ttl if spec.ttl else None
        engine.add_record(record)
        engine.events.publish(owner, record.id, "running", "created")
        return record.info()

    def _check_capabilities(self, spec: SandboxSpec, networked: bool) -> None:
        """Refuse (409 ``unsupported``) what the tier's driver does not declare it can do."""
        caps = self._engine.drivers[spec.isolation].capabilities
        doing = f"create a {spec.isolation} sandbox"
        for needed, has, capability, what in (
            (bool(spec.volumes), caps.volumes, "volumes", "with volumes"),
            (networked, caps.network_policy, "network_policy", "with a network policy"),
            (spec.persistence == "workspace", caps.workspace, "workspace", "with persistence='workspace'"),
        ):
            if needed and not has:
                raise Unsupported.missing(spec.isolation, capability, f"{doing} {what}")

    def resources(self, spec: SandboxSpec) -> Resources:
        """The limits ``spec`` asks for, the engine's defaults filled in."""
        return resolve_resources(spec, self._engine.config.default_resources)

    def plan_network(self, record: SandboxRecord, policy: EgressPolicy) -> None:
        """Record where the sandbox's network will be (the namespace is made during boot)."""
        net = self._engine.net
        ca = net.ca_bundle(bool(record.secrets))
        record.network = policy.public()
        record.attachment = {
            "netns": str(net.netns_path(record.id)),
            "resolv_conf": str(net.resolv_conf(record.id)),
            "ca_bundle": str(ca) if ca else "",
        }

    async def _volume_mounts(self, spec: SandboxSpec) -> list[dict[str, Any]]:
        store = self._engine.volume_store
        return [
            {
                "volume": m.volume,
                "path": check_mount_path(m.path),
                "read_only": m.read_only,
                "source": str(await store.source(m.volume)),
            }
            for m in spec.volumes
        ]

    # -- inspect -----------------------------------------------------------------------------
    async def get(self, sandbox_id: str) -> SandboxInfo:
        """The sandbox, in any state (SandboxNotFound once it is gone)."""
        return self._engine.record(sandbox_id).info()

    async def list(self) -> list[SandboxInfo]:
        """Every sandbox of this engine, oldest first."""
        return [r.info() for r in self._engine.records()]

    async def end(self, sandbox_id: str) -> SandboxEnd:
        """Why a sandbox that ended ended, while its end record is kept (ends.py); a sandbox
        that still exists is a Conflict, an unknown one SandboxNotFound."""
        engine = self._engine
        if sandbox_id in engine.live_ids():
            state = engine.record(sandbox_id).state
            raise Conflict(f"sandbox {sandbox_id} has not ended: it is {state}")
        kept = engine.ends.get(sandbox_id)
        if kept is None:
            raise SandboxNotFound(
                f"sandbox {sandbox_id!r} does not exist, or it ended too long "
                f"ago for its end record to be kept"
            )
        return kept[1]

    def owner(self, sandbox_id: str) -> str | None:
        """The tenant that owned a sandbox that ended (from its end record), or None."""
        kept = self._engine.ends.get(sandbox_id)
        return kept[0] if kept is not None else None

    def follow_events(
        self, visible: Callable[[str | None], bool], since: int | None = None
    ) -> AsyncIterator[SandboxEvent]:
        """Lifecycle events of the sandboxes whose owner ``visible`` accepts (events.py)."""
        return self._engine.events.follow(visible, since)

    async def usage(self, sandbox_id: str) -> UsageHistory:
        """The sandbox's recent resource usage, for charts (usage.py)."""
        return self._engine.usage.history(sandbox_id)

    async def stats(self, sandbox_id: str) -> SandboxStats:
        """What the sandbox uses now."""
        record = self._engine.record(sandbox_id)
        stats = await self._engine.usage.stats(record)
        return SandboxStats(
            memory_bytes=stats.memory_bytes,
            memory_limit_bytes=stats.memory_limit_bytes,
            cpu_seconds=stats.cpu_seconds,
            pids=stats.pids,
            oom_kills=stats.oom_kills,
        )

    def held_disk_mb(self, sandbox_id: str) -> int:
        """MiB of host disk the sandbox holds or may fill (for quotas; docs/limits.md)."""
        return self._lifecycle.held_disk_mb(sandbox_id)

    def volume_users(self, name: str) -> builtins.list[str]:
        """Ids of the sandboxes (in any state) that mount volume ``name``."""
        return sorted(r.id for r in self._engine.records() if any(v["volume"] == name for v in r.volumes))

    # -- change ------------------------------------------------------------------------------
    async def set_timeout(self, sandbox_id: str, timeout: float) -> SandboxInfo:
        """Expire ``timeout`` seconds from now instead."""
        engine = self._engine
        record = engine.record(sandbox_id)
        record.timeout = engine.check_timeout(timeout)
        record.expires_at = time.time() + record.timeout
        record.save()
        engine.arm_timer(record)
        return record.info()

    async def touch(self, sandbox_id: str) -> SandboxInfo:
        """Count now as the sandbox's last activity (``idle_timeout`` counts from here)."""
        record = self._engine.record(sandbox_id)
        self._engine.touch(record)
        return record.info()

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> SandboxInfo:
        """Replace a networked sandbox's egress policy; new connections follow it at once."""
        engine = self._engine
        record = engine.record(sandbox_id)
        checked = egress_policy(policy) or EgressPolicy()
        if record.network is None:
            raise Conflict(
                f"sandbox {sandbox_id} was created with network='none' and has no "
                f"network interface; create it with a policy (even an empty one, "
                f"{{'allow_out': []}}) to change it later"
            )
        async with engine.lock(sandbox_id):
            try:
                await engine.net.set_policy(sandbox_id, checked)
            except NetError as exc:
                raise SandboxUnavailable(f"could not change the network policy: {exc}") from None
            record.network = checked.public()
            record.save()
        return record.info()

    async def egress(self, sandbox_id: str, limit: int = 1000) -> EgressLog:
        """The newest ``limit`` entries of the sandbox's egress log (empty without a network)."""
        self._engine.record(sandbox_id)  # 404 for an unknown sandbox
        entries = []
        for raw in self._engine.net.egress(sandbox_id, limit):
            try:
                entries.append(EgressEntry.model_validate(raw))
            except ValueError:
                continue  # a line this version does not understand
        return EgressLog(items=entries)

    async def set_metadata(self, sandbox_id: str, metadata: dict[str, str]) -> SandboxInfo:
        """Replace the sandbox's metadata (at most 64 string pairs, as at create)."""
        if len(metadata) > 64 or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise InvalidRequest("metadata is at most 64 pairs of strings")
        record = self._engine.record(sandbox_id)
        record.metadata = dict(metadata)
        record.save()
        return record.info()

    async def set_envs(self, sandbox_id: str, envs: dict[str, str]) -> SandboxInfo:
        """Replace the environment that processes started from now on get (at most 256
        string pairs, as at create); running processes keep theirs."""
        if len(envs) > 256 or not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
            for k, v in envs.items()
        ):
            raise InvalidRequest(
                "envs is at most 256 NAME=value pairs of strings (no '=' in a name, no NUL anywhere)"
            )
        record = self._engine.record(sandbox_id)
        record.envs = dict(envs)
        record.save()
        return record.info()

    async def set_retention(
        self,
        sandbox_id: str,
        *,
        auto_delete: float | None = None,
        auto_archive: float | None = None,
        archive_never: bool = False,
        ttl: float | None = None,
    ) -> SandboxInfo:
        """Change how long a paused or stopped sandbox is kept (``auto_delete`` seconds) and
        when a stopped workspace is archived (``auto_archive`` seconds; ``archive_never``
        turns that off), or delete it ``ttl`` seconds from now whatever its state (0: no such
        limit). Arguments left out keep their value. A sandbox already paused or stopped
        counts the new intervals from now."""
        engine = self._engine
        record = engine.record(sandbox_id)
        if ttl is not None:
            if not 0 <= ttl <= MAX_AUTO_DELETE:
                raise InvalidRequest(f"ttl must be between 0 (none) and {MAX_AUTO_DELETE:.0f} seconds")
            record.delete_at = time.time() + ttl if ttl else None
        if auto_delete is not None:
            record.auto_delete = check_options(record.persistence, record.on_timeout, auto_delete)
        if archive_never:
            record.auto_archive = None
        elif auto_archive is not None:
            record.auto_archive = check_auto_archive(record.persistence, auto_archive)
        retention = auto_delete is not None or auto_archive is not None or archive_never
        if retention and record.state in ("paused", "stopped", "archived"):
            now = time.time()
            record.expires_at = now + record.auto_delete
            record.archive_at = (
                now + record.auto_archive if record.state == "stopped" and record.auto_archive else None
            )
        record.save()
        engine.arm_timer(record)
        return record.info()

    async def resize(self, sandbox_id: str, resize: ResizeSpec) -> SandboxInfo:
        """Change the sandbox's CPU and memory limits: at once while it runs (only upward, on
        a tier with ``hot_resize``), or for its next start while it is stopped or archived."""
        engine = self._engine
        record = engine.record(sandbox_id)
        async with engine.lock(sandbox_id):
            old = record.resources
            new = dataclasses.replace(
                old,
                cpu=old.cpu if resize.cpu is None else resize.cpu,
                memory_mb=old.memory_mb if resize.memory_mb is None else resize.memory_mb,
            )
            if record.state == "running":
                if not engine.drivers[record.tier].capabilities.hot_resize:
                    raise Unsupported.missing(
                        record.tier, "hot_resize", f"resize running sandbox {sandbox_id} (stop it first)"
                    )
                if new.cpu < old.cpu or new.memory_mb < old.memory_mb:
                    raise Conflict(
                        f"a running sandbox's cpu and memory can only grow (it has {old.cpu:g} "
                        f"cpu, {old.memory_mb} MiB): stop sandbox {sandbox_id} to lower them"
                    )
                record.resources = new
                try:
                    await engine.drivers[record.tier].update_limits(record.spec)
                except DriverError as exc:
                    record.resources = old
                    raise SandboxUnavailable(f"could not resize sandbox {sandbox_id}: {exc}") from None
            elif record.state in ("stopped", "archived"):
                record.resources = new
            else:
                raise Conflict(
                    f"cannot resize sandbox {sandbox_id}: it is {record.state}; resume it "
                    f"(a running sandbox's limits may grow) or stop it first"
                )
            record.save()
        return record.info()

    # -- lifecycle (docs/persistence.md) -----------------------------------------------------
    async def pause(self, sandbox_id: str) -> SandboxInfo:
        """Save processes and memory; the sandbox stops running until resumed."""
        return await self._lifecycle.pause(sandbox_id)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        """Bring a paused sandbox back exactly where it was."""
        return await self._lifecycle.resume(sandbox_id)

    async def connect(self, sandbox_id: str) -> SandboxInfo:
        """Make the sandbox usable: resume it if paused, start it if stopped or archived."""
        return await self._lifecycle.connect(sandbox_id)

    async def stop(self, sandbox_id: str) -> SandboxInfo:
        """Stop every process and keep the files (persistence="workspace" only)."""
        return await self._lifecycle.stop(sandbox_id)

    async def start(self, sandbox_id: str) -> SandboxInfo:
        """Boot a stopped or archived workspace again on its kept files."""
        return await self._lifecycle.start(sandbox_id)

    async def archive(self, sandbox_id: str) -> SandboxInfo:
        """Compress a stopped workspace's files to free disk (start restores them)."""
        return await self._lifecycle.archive(sandbox_id)

    async def snapshot(self, sandbox_id: str, name: str, owner: str | None) -> TemplateInfo:
        """Save the sandbox's files as a new template ``name`` owned by ``owner``."""
        return await snapshot(self._engine, self._lifecycle, sandbox_id, name, owner)

    async def fork(
        self, sandbox_id: str, count: int, memory: bool | None = None, owner: str | None = None
    ) -> builtins.list[SandboxInfo]:
        """``count`` running copies of a running or paused sandbox (docs/fork.md): files
        copy-on-write on every tier; processes and memory too where :meth:`fork_keeps_memory`
        (``memory``: None = if the tier can, True = required, False = files only)."""
        return await fork(self._engine, self._lifecycle, sandbox_id, count, memory, owner)

    def fork_keeps_memory(self, sandbox_id: str, memory: bool | None = None) -> bool:
        """Whether :meth:`fork` of the sandbox would copy its processes and memory (409 if
        it cannot be forked as asked)."""
        return keeps_memory(self._engine, self._engine.record(sandbox_id), memory)

    async def kill(self, sandbox_id: str) -> None:
        """Kill the sandbox and remove every trace of it."""
        await self._engine.kill(sandbox_id)

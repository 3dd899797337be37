"""Who may do what with which sandbox: the layer between the routes and the engine.

``LocalControl`` (local mode, unix socket) lets the one local user do everything. ``ControlPlane``
(remote mode) authenticates API keys, records which tenant owns each sandbox, enforces quotas,
writes the audit log, and keeps the store and the engine in agreement across restarts. The engine
itself stays tenant-agnostic.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from ..engine import Conflict, Engine, NotFound, QuotaExceeded, SandboxNotFound
from ..models import ForkResult, ForkSpec, ResizeSpec, SandboxInfo, SandboxSpec, VolumeInfo
from .auth import ADMIN_TENANT, LOCAL, KeyCache, Principal, hash_key, same_secret
from .metrics import Metrics
from .settings import Quotas, ServerSettings
from .store import STORE_DOWN, OwnedSandbox, Store, StoreUnavailable, Tenant

log = logging.getLogger("stockade.server")
T = TypeVar("T")
#: How long an idempotency key answers with its sandbox, and how long a create waits for
#: another create with the same key to finish.
IDEMPOTENCY_TTL = 3600.0
IDEMPOTENCY_WAIT = 120.0


class Control:
    """What the routes ask before and after engine calls; the local-mode behaviour."""

    needs_keys = False

    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self._keys: dict[tuple[str, str], tuple[str | None, float]] = {}
        self._url_salts: dict[str, str] = {}

    async def start(self) -> None:
        """Called once the engine is open."""

    async def close(self) -> None:
        """Called before the engine closes."""

    async def authenticate(self, token: str | None) -> Principal | None:
        return LOCAL

    def owner(self, sandbox_id: str) -> str | None:
        return ADMIN_TENANT

    def visible(self, principal: Principal, items: list[SandboxInfo]) -> list[SandboxInfo]:
        """The sandboxes of ``items`` that ``principal`` may see."""
        return [s for s in items if principal.may_see(self.owner(s.id))]

    def check_owner(self, principal: Principal, sandbox_id: str) -> None:
        """SandboxNotFound unless ``principal`` may act on the sandbox (another tenant's
        sandbox reads exactly as a missing one)."""
        if not principal.may_see(self.owner(sandbox_id)):
            raise SandboxNotFound(f"sandbox {sandbox_id!r} does not exist (or has ended)")

    async def volume(self, principal: Principal, name: str) -> VolumeInfo:
        """Volume ``name`` if ``principal`` may see it; NotFound, as for a missing one."""
        info = await self.engine.volumes.get(name)
        if not principal.may_see(info.owner):
            raise NotFound(f"no volume {name!r}; create it first (Volume.create)")
        return info

    async def _check_spec(self, principal: Principal, spec: SandboxSpec) -> None:
        """Another tenant's volume or template reads as missing."""
        for mount in spec.volumes:
            await self.volume(principal, mount.volume)
        if spec.template:
            self.engine.templates.check_usable(spec.template, principal.may_see)

    async def create(self, principal: Principal, request_id: str | None, spec: SandboxSpec) -> SandboxInfo:
        """Create a sandbox for ``principal`` (quotas, audit and ownership in remote mode)."""
        await self._check_spec(principal, spec)
        started = time.perf_counter()
        tier = spec.isolation
        try:
            info = await self.engine.sandboxes.create(spec, owner=principal.tenant)
        except BaseException:
            self.metrics.creates.labels(tier=tier, outcome="error").inc()
            raise
        self.metrics.creates.labels(tier=tier, outcome="ok").inc()
        self.metrics.create_seconds.labels(tier=tier).observe(time.perf_counter() - started)
        return info

    async def create_once(
        self, principal: Principal, request_id: str | None, spec: SandboxSpec, key: str
    ) -> SandboxInfo:
        """Create, unless a create with idempotency ``key`` made a sandbox of the tenant in
        the last ``IDEMPOTENCY_TTL`` seconds that still lives: then return that one. Creates
        with one key run one after another (across replicas, in remote mode)."""
        deadline = time.monotonic() + IDEMPOTENCY_WAIT
        while True:
            mine, earlier = await self._claim(principal.tenant, key)
            if mine:
                break
            if earlier is not None:
                try:
                    info = await self.engine.sandboxes.get(earlier)
                    if info.state != "killing":
                        return info
                except SandboxNotFound:
                    pass
                await self._settle(principal.tenant, key, None)  # it ended: create anew
                continue
            if time.monotonic() > deadline:
                raise Conflict("a create with this idempotency key is still running; retry later")
            await asyncio.sleep(0.1)
        try:
            info = await self.create(principal, request_id, spec)
        except BaseException:
            await self._settle(principal.tenant, key, None)
            raise
        await self._settle(principal.tenant, key, info.id)
        return info

    async def resize(
        self, principal: Principal, sandbox_id: str, resize: ResizeSpec, request_id: str | None
    ) -> SandboxInfo:
        """Change a sandbox's CPU and memory (within the tenant's quotas in remote mode)."""
        return await self.engine.sandboxes.resize(sandbox_id, resize)

    async def file_url_salt(self, sandbox_id: str) -> str:
        """The salt of the sandbox's file-URL signing key ("" until rotated): signed file
        URLs (Daytona's) are checked against a key made from it, so rotating it retires them."""
        return self._url_salts.get(sandbox_id, "")

    async def rotate_file_url_salt(self, sandbox_id: str) -> str:
        """A new salt for the sandbox (kept in memory in local mode)."""
        self._url_salts[sandbox_id] = salt = secrets.token_hex(16)
        return salt

    async def _claim(self, tenant: str, key: str) -> tuple[bool, str | None]:
        """Claim an idempotency key (see ``Store.claim_key``); in memory in local mode."""
        now = time.time()
        found = self._keys.get((tenant, key))
        if found is not None and now - found[1] <= IDEMPOTENCY_TTL:
            return False, found[0]
        self._keys[(tenant, key)] = (None, now)
        return True, None

    async def _settle(self, tenant: str, key: str, sandbox_id: str | None) -> None:
        if sandbox_id is None:
            self._keys.pop((tenant, key), None)
        elif (tenant, key) in self._keys:
            self._keys[(tenant, key)] = (sandbox_id, self._keys[(tenant, key)][1])

    async def kill(self, principal: Principal, sandbox_id: str, request_id: str | None) -> None:
        await self.engine.sandboxes.kill(sandbox_id)

    async def fork(
        self, principal: Principal, request_id: str | None, sandbox_id: str, spec: ForkSpec
    ) -> ForkResult:
        """Copies of a sandbox (docs/fork.md); in remote mode each is quota-checked and
        audited like a create, and belongs to the source's tenant."""
        sandboxes = self.engine.sandboxes
        memory = sandboxes.fork_keeps_memory(sandbox_id, spec.memory)
        items = await sandboxes.fork(sandbox_id, spec.count, spec.memory, owner=self.owner(sandbox_id))
        return ForkResult(items=items, memory=memory)

    async def record(
        self, principal: Principal, request_id: str | None, action: str, target: str, **detail: Any
    ) -> None:
        """Write an audit event (remote mode; local mode keeps no audit trail)."""

    async def check_start(self, principal: Principal, sandbox_id: str) -> None:
        """Before a start or connect: may the sandbox's disk come back from its archive?"""

    async def set_timeout(
        self, principal: Principal, sandbox_id: str, timeout: float, request_id: str | None
    ) -> SandboxInfo:
        return await self.engine.sandboxes.set_timeout(sandbox_id, timeout)

    async def start_sandbox(self, principal: Principal, sandbox_id: str) -> SandboxInfo:
        """Start a stopped or archived workspace (429 if its archive would pass the quota)."""
        await self.check_start(principal, sandbox_id)
        return await self.engine.sandboxes.start(sandbox_id)

    async def connect_sandbox(self, principal: Principal, sandbox_id: str) -> SandboxInfo:
        """Make the sandbox usable: resume, or start (quota-checked) if stopped or archived."""
        await self.check_start(principal, sandbox_id)
        return await self.engine.sandboxes.connect(sandbox_id)


@dataclass(frozen=True)
class Usage:
    """What a tenant holds: every sandbox counts, whatever its state (docs/limits.md)."""

    sandboxes: int = 0
    vcpu: float = 0.0
    memory_mb: int = 0
    disk_mb: int = 0

    def plus(self, row: OwnedSandbox, disk_mb: int) -> "Usage":
        return Usage(
            self.sandboxes + 1, self.vcpu + row.cpu, self.memory_mb + row.memory_mb, self.disk_mb + disk_mb
        )


class ControlPlane(Control):
    """Remote mode: tenants, keys, ownership, quotas, audit, reconciliation."""

    needs_keys = True

    def __init__(
        self, engine: Engine, metrics: Metrics, store: Store, settings: ServerSettings, admin_key: str
    ) -> None:
        super().__init__(engine, metrics)
        self.store = store
        self.settings = settings
        self._admin_hash = hash_key(admin_key)
        self.keys = KeyCache(settings.key_cache_seconds)
        self.owners: dict[str, OwnedSandbox] = {}
        self._pending: dict[str, list[OwnedSandbox]] = {}
        self._pending_disk: dict[int, int] = {}  # id(claim) -> the disk_mb it asks for
        self._tenants: dict[str, Tenant] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="stockade-store")
        self._reaper: asyncio.Task[None] | None = None

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call on the store's thread. A database that does not answer is a 503
        (``store_unavailable``): its transaction was rolled back; the pool reconnects by itself
        once the database is back (a restart is survived without restarting the server)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        except STORE_DOWN as exc:
            log.warning("store call %s failed: %s", getattr(fn, "__name__", fn), exc.orig)
            raise StoreUnavailable(
                "the store (database) did not answer, so the request did not complete: retry it in a moment"
            ) from None

    # -- start, stop, reconcile --------------------------------------------------------------
    async def start(self) -> None:
        await self.db(self.store.migrate)
        await self.db(self.store.create_tenant, ADMIN_TENANT, exist_ok=True)
        await self.reconcile()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.db(self.store.close)
        self._executor.shutdown(wait=True)

    async def reconcile(self) -> None:
        """Make the store and the engine agree: drop rows whose sandbox is gone, kill sandboxes
        that no row claims (say, created just before the server was killed)."""
        rows = {row.id: row for row in await self.db(self.store.sandboxes)}
        live = {s.id for s in await self.engine.sandboxes.list()}
        gone = set(rows) - live
        if gone:
            await self.db(self.store.remove_sandboxes, gone)
            for sandbox_id in sorted(gone):
                await self.db(
                    self.store.audit,
                    tenant=rows[sandbox_id].tenant,
                    actor="server",
                    action="sandbox.reaped",
                    target=sandbox_id,
                )
            log.info("reconcile: %d store rows had no sandbox and were removed", len(gone))
        orphans = live - set(rows)
        for sandbox_id in sorted(orphans):
            with contextlib.suppress(SandboxNotFound):
                await self.engine.sandboxes.kill(sandbox_id)
        if orphans:
            log.info("reconcile: killed %d sandboxes that no tenant owned", len(orphans))
        self.owners = {i: row for i, row in rows.items() if i in live}

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_interval)
            try:
                await self.reap()
            except Exception:  # noqa: BLE001 - a store hiccup must not stop the sweeps
                log.exception("reaping ended sandboxes failed")

    async def reap(self) -> None:
        """Forget the sandboxes that ended without a kill (their timeout)."""
        live = {s.id for s in await self.engine.sandboxes.list()}
        ended = [row for i, row in list(self.owners.items()) if i not in live]
        if not ended:
            return
        for row in ended:
            self.owners.pop(row.id, None)
        await self.db(self.store.remove_sandboxes, [row.id for row in ended])
        for row in ended:
            await self.db(
                self.store.audit, tenant=row.tenant, actor="server", action="sandbox.expired", target=row.id
            )

    # -- who is calling ----------------------------------------------------------------------
    async def authenticate(self, token: str | None) -> Principal | None:
        if token is None:
            return None
        digest = hash_key(token)
        if same_secret(digest, self._admin_hash):
            return Principal(tenant=ADMIN_TENANT, actor="admin", admin=True)
        now = time.time()
        if (cached := self.keys.get(digest, now)) is not None:
            return cached
        row = await self.db(self.store.key_by_hash, digest)
        if row is None or row.revoked_at is not None or (row.expires_at or now + 1) <= now:
            return None
        principal = Principal(tenant=row.tenant, actor=row.id)
        self.keys.put(digest, principal, row.expires_at)
        return principal

    def owner(self, sandbox_id: str) -> str | None:
        row = self.owners.get(sandbox_id)
        # A sandbox that ended: its end record says whose it was (only the owner reads it).
        return row.tenant if row is not None else self.engine.sandboxes.owner(sandbox_id)

    # -- quotas ------------------------------------------------------------------------------
    async def quotas(self, tenant: str) -> Quotas:
        row = self._tenants.get(tenant)
        if row is None:
            row = await self.db(self.store.tenant, tenant)
            if row is not None:
                self._tenants[tenant] = row
        base = self.settings.quotas
        if row is None:
            return base
        return Quotas(
            *(
                getattr(row, f) if getattr(row, f) is not None else getattr(base, f)
                for f in ("max_sandboxes", "max_vcpu", "max_memory_mb", "max_lifetime", "max_disk_mb")
            )
        )

    def forget_tenant(self, tenant: str) -> None:
        self._tenants.pop(tenant, None)

    def usage(self, tenant: str) -> Usage:
        total = Usage()
        for row in self.owners.values():
            if row.tenant == tenant:
                total = total.plus(row, self._held_disk_mb(row.id))
        for claim in self._pending.get(tenant, []):
            total = total.plus(claim, self._pending_disk.get(id(claim), 0))
        return total

    def _held_disk_mb(self, sandbox_id: str) -> int:
        try:
            return self.engine.sandboxes.held_disk_mb(sandbox_id)
        except SandboxNotFound:  # ended; the reaper forgets it soon
            return 0

    def _check_disk(self, quotas: Quotas, usage: Usage, tenant: str, more_mb: int, what: str) -> None:
        if usage.disk_mb + more_mb > quotas.max_disk_mb:
            raise QuotaExceeded(
                f"tenant {tenant!r} holds {usage.disk_mb} of {quotas.max_disk_mb} MiB of disk "
                f"(sandboxes count in every state: running, paused, stopped, archived); "
                f"{what} needs {more_mb} MiB more; kill or archive a stopped sandbox, or ask "
                f"for a higher quota"
            )

    def _check(self, quotas: Quotas, usage: Usage, row: OwnedSandbox, timeout: float, disk_mb: int) -> None:
        if timeout > quotas.max_lifetime:
            raise QuotaExceeded(
                f"a sandbox may live at most {quotas.max_lifetime:g} s for tenant "
                f"{row.tenant!r}; asked for {timeout:g} s"
            )
        if usage.sandboxes + 1 > quotas.max_sandboxes:
            raise QuotaExceeded(
                f"tenant {row.tenant!r} already runs {usage.sandboxes} sandboxes, "
                f"its limit; kill one or ask for a higher quota"
            )
        if usage.vcpu + row.cpu > quotas.max_vcpu + 1e-9:
            raise QuotaExceeded(
                f"tenant {row.tenant!r} uses {usage.vcpu:g} of {quotas.max_vcpu:g}"
                f" vCPUs; {row.cpu:g} more would pass the limit"
            )
        if usage.memory_mb + row.memory_mb > quotas.max_memory_mb:
            raise QuotaExceeded(
                f"tenant {row.tenant!r} uses {usage.memory_mb} of "
                f"{quotas.max_memory_mb} MiB; {row.memory_mb} MiB more would pass "
                f"the limit"
            )
        self._check_disk(quotas, usage, row.tenant, disk_mb, "a new sandbox")

    # -- lifecycle ---------------------------------------------------------------------------
    async def create(self, principal: Principal, request_id: str | None, spec: SandboxSpec) -> SandboxInfo:
        await self._check_spec(principal, spec)
        resources = self.engine.sandboxes.resources(spec)
        timeout = spec.timeout or self.engine.config.default_timeout
        claim = OwnedSandbox(
            id="",
            tenant=principal.tenant,
            isolation=spec.isolation,
            cpu=resources.cpu,
            memory_mb=resources.memory_mb,
            created_at=time.time(),
        )
        disk_mb = resources.disk_mb
        quotas = await self.quotas(principal.tenant)
        self._check(quotas, self.usage(principal.tenant), claim, timeout, disk_mb)
        pending = self._pending.setdefault(principal.tenant, [])
        pending.append(claim)
        self._pending_disk[id(claim)] = disk_mb
        try:
            info = await super().create(principal, request_id, spec)
            claim.id = info.id
            # Only now does the row exist: a crash before this line leaves a sandbox that no
            # row claims, which the next start's reconcile() kills.
            await self.db(
                self.store.add_sandbox,
                OwnedSandbox(
                    id=claim.id,
                    tenant=claim.tenant,
                    isolation=claim.isolation,
                    cpu=claim.cpu,
                    memory_mb=claim.memory_mb,
                    created_at=claim.created_at,
                ),
                self.store.event(
                    tenant=principal.tenant,
                    actor=principal.actor,
                    action="sandbox.create",
                    target=claim.id,
                    request_id=request_id,
                    isolation=claim.isolation,
                    cpu=claim.cpu,
                    memory_mb=claim.memory_mb,
                ),
            )
            self.owners[claim.id] = claim
        except BaseException:
            if claim.id:
                with contextlib.suppress(Exception):
                    await self.engine.sandboxes.kill(claim.id)
            raise
        finally:
            pending.remove(claim)
            self._pending_disk.pop(id(claim), None)
        return info

    async def resize(
        self, principal: Principal, sandbox_id: str, resize: ResizeSpec, request_id: str | None
    ) -> SandboxInfo:
        """The increase counts against the tenant's quotas from the moment it is asked for."""
        row = self.owners.get(sandbox_id)
        if row is None:
            return await super().resize(principal, sandbox_id, resize, request_id)
        old = (row.cpu, row.memory_mb)
        cpu = old[0] if resize.cpu is None else resize.cpu
        memory_mb = old[1] if resize.memory_mb is None else resize.memory_mb
        quotas, usage = await self.quotas(row.tenant), self.usage(row.tenant)
        if usage.vcpu + cpu - old[0] > quotas.max_vcpu + 1e-9:
            raise QuotaExceeded(
                f"tenant {row.tenant!r} uses {usage.vcpu:g} of {quotas.max_vcpu:g} vCPUs; "
                f"{cpu - old[0]:g} more would pass the limit"
            )
        if usage.memory_mb + memory_mb - old[1] > quotas.max_memory_mb:
            raise QuotaExceeded(
                f"tenant {row.tenant!r} uses {usage.memory_mb} of {quotas.max_memory_mb} MiB; "
                f"{memory_mb - old[1]} MiB more would pass the limit"
            )
        row.cpu, row.memory_mb = max(cpu, old[0]), max(memory_mb, old[1])  # held meanwhile
        try:
            info = await super().resize(principal, sandbox_id, resize, request_id)
        except BaseException:
            row.cpu, row.memory_mb = old
            raise
        row.cpu, row.memory_mb = info.cpu, info.memory_mb
        await self.db(
            self.store.set_sandbox_resources,
            sandbox_id,
            info.cpu,
            info.memory_mb,
            self.store.event(
                tenant=row.tenant,
                actor=principal.actor,
                action="sandbox.resize",
                target=sandbox_id,
                request_id=request_id,
                cpu=info.cpu,
                memory_mb=info.memory_mb,
            ),
        )
        return info

    async def file_url_salt(self, sandbox_id: str) -> str:
        """Read from the store, so a rotation through one replica holds on all of them."""
        return await self.db(self.store.file_url_salt, sandbox_id) or ""

    async def rotate_file_url_salt(self, sandbox_id: str) -> str:
        salt = secrets.token_hex(16)
        await self.db(self.store.set_file_url_salt, sandbox_id, salt)
        return salt

    async def _claim(self, tenant: str, key: str) -> tuple[bool, str | None]:
        return await self.db(self.store.claim_key, tenant, key, IDEMPOTENCY_TTL)

    async def _settle(self, tenant: str, key: str, sandbox_id: str | None) -> None:
        await self.db(self.store.settle_key, tenant, key, sandbox_id)

    async def kill(self, principal: Principal, sandbox_id: str, request_id: str | None) -> None:
        try:
            await self.engine.sandboxes.kill(sandbox_id)
        except SandboxNotFound:
            await self._forget(sandbox_id, "server", "sandbox.expired", None)
            raise
        await self._forget(sandbox_id, principal.actor, "sandbox.kill", request_id)

    async def fork(
        self, principal: Principal, request_id: str | None, sandbox_id: str, spec: ForkSpec
    ) -> ForkResult:
        self.engine.sandboxes.fork_keeps_memory(sandbox_id, spec.memory)  # 409 before 429
        source = await self.engine.sandboxes.get(sandbox_id)
        tenant = self.owner(sandbox_id) or principal.tenant
        quotas = await self.quotas(tenant)
        usage = self.usage(tenant)
        claims = []
        for _ in range(spec.count):  # every copy is a new sandbox: all of them must fit
            claim = OwnedSandbox(
                id="",
                tenant=tenant,
                isolation=source.isolation,
                cpu=source.cpu,
                memory_mb=source.memory_mb,
                created_at=time.time(),
            )
            self._check(quotas, usage, claim, source.timeout, source.disk_mb)
            usage = usage.plus(claim, source.disk_mb)
            claims.append(claim)
        pending = self._pending.setdefault(tenant, [])
        for claim in claims:
            pending.append(claim)
            self._pending_disk[id(claim)] = source.disk_mb
        try:
            result = await super().fork(principal, request_id, sandbox_id, spec)
            try:
                for claim, item in zip(claims, result.items):
                    claim.id = item.id
                    await self.db(
                        self.store.add_sandbox,
                        OwnedSandbox(
                            id=claim.id,
                            tenant=tenant,
                            isolation=claim.isolation,
                            cpu=claim.cpu,
                            memory_mb=claim.memory_mb,
                            created_at=claim.created_at,
                        ),
                        self.store.event(
                            tenant=tenant,
                            actor=principal.actor,
                            action="sandbox.fork",
                            target=item.id,
                            request_id=request_id,
                            source=sandbox_id,
                            memory=result.memory,
                            isolation=item.isolation,
                            cpu=item.cpu,
                            memory_mb=item.memory_mb,
                        ),
                    )
                    self.owners[claim.id] = claim
            except BaseException:
                for item in result.items:
                    with contextlib.suppress(Exception):
                        await self.engine.sandboxes.kill(item.id)
                    self.owners.pop(item.id, None)
                raise
        finally:
            for claim in claims:
                pending.remove(claim)
                self._pending_disk.pop(id(claim), None)
        return result

    async def record(
        self, principal: Principal, request_id: str | None, action: str, target: str, **detail: Any
    ) -> None:
        await self.db(
            self.store.audit,
            tenant=principal.tenant,
            actor=principal.actor,
            action=action,
            target=target,
            request_id=request_id,
            **detail,
        )

    async def _forget(self, sandbox_id: str, actor: str, action: str, request_id: str | None) -> None:
        row = self.owners.pop(sandbox_id, None)
        if row is not None:
            await self.db(
                self.store.remove_sandboxes,
                [sandbox_id],
                self.store.event(
                    tenant=row.tenant, actor=actor, action=action, target=sandbox_id, request_id=request_id
                ),
            )

    async def check_start(self, principal: Principal, sandbox_id: str) -> None:
        info = await self.engine.sandboxes.get(sandbox_id)
        row = self.owners.get(sandbox_id)
        if row is None or info.state != "archived":
            return
        usage = self.usage(row.tenant)
        more = info.disk_mb - self._held_disk_mb(sandbox_id)
        self._check_disk(
            await self.quotas(row.tenant),
            usage,
            row.tenant,
            max(0, more),
            f"restoring archived sandbox {sandbox_id}",
        )

    async def set_timeout(
        self, principal: Principal, sandbox_id: str, timeout: float, request_id: str | None
    ) -> SandboxInfo:
        info = await self.engine.sandboxes.get(sandbox_id)
        row = self.owners.get(sandbox_id)
        if row is not None:
            quotas = await self.quotas(row.tenant)
            lifetime = time.time() + timeout - info.created_at
            if lifetime > quotas.max_lifetime:
                raise QuotaExceeded(
                    f"a sandbox may live at most {quotas.max_lifetime:g} s for tenant "
                    f"{row.tenant!r}; this timeout would make it {lifetime:.0f} s"
                )
        return await self.engine.sandboxes.set_timeout(sandbox_id, timeout)

"""``ClusterSandboxes``: the sandboxes service of a whole cluster, as an API replica sees it.

Creates take a slot through :class:`Placer` and go to the host actor on the node Ray chose;
``get``, ``list``, ``kill`` and every other engine call (:meth:`ClusterSandboxes.call`) go to
the owning host recorded in PostgreSQL. A watcher
finds host actors by name and pings them: a host whose actor is gone or silent is marked down
and its sandboxes ``lost`` (reason ``host_lost``); when it comes back, what it still runs is
``running`` again, what it ended by itself (a timeout) is forgotten and its slot freed, and
what no row claims is killed. A draining host takes no new sandboxes (:meth:`drain`); a
stopped workspace whose host died starts on another host from shared storage
(:meth:`move_if_lost`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from typing import Any, Callable, TypeVar

from ..engine import Conflict, EngineError, NotFound, SandboxNotFound, SandboxUnavailable
from ..engine import errors as engine_errors
from ..models import SandboxInfo, SandboxSpec
from ..server.store import STORE_DOWN, StoreUnavailable
from .host import Failure, HostInfo
from .node import NAMESPACE, actor_name
from .placement import Placer, Reservation
from .resources import TIERS, slot_resource
from .state import ALIVE, LOST, MOVING, ClusterState, HostRow

log = logging.getLogger("stockade.cluster")
T = TypeVar("T")
#: A host that does not answer a ping within this many seconds is marked down.
PING_TIMEOUT = 5.0
WATCH_EVERY = 1.0
#: How often each live host's sandboxes are compared with the rows (ended ones forgotten).
SYNC_EVERY = 5.0
#: A sandbox a returning host runs without a row is killed only if older than this (a create
#: on another replica may be between the host's answer and its row).
ORPHAN_AGE = 60.0
#: The longest a call to a host may take (a create may boot a microVM under TCG).
CALL_TIMEOUT = 300.0
HOST_LOST = "host_lost"
#: A create whose slot Ray put on a draining or dead host is placed again (placement.py);
#: this many tries at most.
PLACE_TRIES = 16


def _error_classes() -> dict[str, type[EngineError]]:
    found = {}
    for name in dir(engine_errors):
        cls = getattr(engine_errors, name)
        if isinstance(cls, type) and issubclass(cls, EngineError):
            found[cls.code] = cls
    return found


ERRORS = _error_classes()


def raise_failure(out: T | Failure) -> T:
    """The value, or the engine error the host reported, re-raised as the same class."""
    if isinstance(out, Failure):
        raise ERRORS.get(out.code, EngineError)(out.message)
    return out


class HostDown(SandboxUnavailable):
    """The sandbox's host is gone (its Ray node or its actor died)."""


class ClusterSandboxes:
    """create/get/list/kill, and any engine call on a sandbox's host, over the cluster."""

    def __init__(self, ray: Any, state: ClusterState, placer: Placer) -> None:
        self._ray = ray
        self.state = state
        self._placer = placer
        self._actors: dict[str, Any] = {}
        self._next_sync = 0.0
        #: Each live host's stream endpoint (from its ``describe``), for :mod:`.remote`.
        self.stream_urls: dict[str, str] = {}
        #: The last known state of each sandbox this replica saw (for sync questions such
        #: as the disk a sandbox holds).
        self.known: dict[str, SandboxInfo] = {}

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """A cluster-state call off the event loop; a database that does not answer is a 503
        (``store_unavailable``), as for the control plane's store."""
        try:
            return await asyncio.to_thread(fn, *args)
        except STORE_DOWN as exc:
            log.warning("cluster state call %s failed: %s", getattr(fn, "__name__", fn), exc.orig)
            raise StoreUnavailable(
                "the cluster's database did not answer, so the request did not complete: retry it in a moment"
            ) from None

    # -- talking to hosts ------------------------------------------------------------------
    def _actor(self, host: str) -> Any:
        if (handle := self._actors.get(host)) is None:
            handle = self._ray.get_actor(actor_name(host), namespace=NAMESPACE)
            self._actors[host] = handle
        return handle

    async def _call(self, host: str, method: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """Call ``method`` on host ``host``'s actor; a dead host is marked down (HostDown)."""
        from ray.exceptions import RayActorError

        try:
            ref = getattr(self._actor(host), method).remote(*args)
            return await asyncio.wait_for(ref, timeout)
        except (RayActorError, ValueError, asyncio.TimeoutError) as exc:
            self._actors.pop(host, None)
            why = (
                "did not answer in time"
                if isinstance(exc, asyncio.TimeoutError)
                else "is gone (its Ray node or actor died)"
            )
            await self.db(self.state.host_down, host, HOST_LOST)
            raise HostDown(f"host {host} {why}; its sandboxes are reported lost") from None

    # -- the service -----------------------------------------------------------------------
    async def create(self, spec: SandboxSpec, owner: str = "") -> tuple[SandboxInfo, str]:
        """Place and create a sandbox for tenant ``owner``; return it and the name of the host
        it runs on."""
        slot, host = await self._place(spec.isolation)
        try:
            info: SandboxInfo = raise_failure(await self._call(host, "create", spec, owner))
            try:
                await self.db(self.state.add_sandbox, info, host, slot.name)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._call(host, "kill", info.id)
                raise
        except BaseException:
            await self._placer.release(slot.name)
            raise
        return info, host

    async def _place(self, tier: str) -> tuple[Reservation, str]:
        """A slot of ``tier`` on a live host that is not draining, and that host's name.

        A slot on a draining host (freed there since its drain) is released and the host's
        free slots held again; a slot on a host that is down but that Ray does not know dead
        yet (its health checks take seconds) is kept while placing, so that Ray picks another
        node, and released afterwards."""
        skipped: builtins.list[Reservation] = []
        try:
            for _ in range(PLACE_TRIES):
                slot = await self._placer.reserve(tier)
                try:
                    row = await self._live_host_on(slot.node_id)
                except BaseException:
                    await self._placer.release(slot.name)
                    raise
                if row is not None and not row.draining:
                    return slot, row.name
                if row is None:
                    skipped.append(slot)
                else:
                    await self._placer.release(slot.name)
                    await self._placer.fill(row.name, [tier])
            raise SandboxUnavailable(
                f"could not place a {tier} sandbox on a live host that is "
                f"not draining after {PLACE_TRIES} tries; retry"
            )
        finally:
            for slot in skipped:
                await self._placer.release(slot.name)

    async def _live_host_on(self, node_id: str) -> HostRow | None:
        for row in await self.db(self.state.hosts):
            if row.node_id == node_id and row.state == ALIVE:
                return row
        return None

    # -- draining --------------------------------------------------------------------------
    async def drain(self, host: str, draining: bool = True) -> HostRow:
        """Make ``host`` take no new sandboxes (its own run on), or (``draining`` False) take
        them again. Its free slots are held, or released (placement.py)."""
        row = await self.db(self.state.set_draining, host, draining)
        if row is None:
            raise NotFound(f"no host {host!r} in this cluster (see GET /cluster/hosts)")
        if draining:
            await self._placer.fill(host, await self._tiers_of(row.node_id))
        else:
            await self._placer.unhold(host)
        return row

    async def _tiers_of(self, node_id: str) -> builtins.list[str]:
        """The tiers Ray's node ``node_id`` has slots for."""
        nodes = await asyncio.to_thread(self._ray.nodes)
        resources: dict[str, float] = next(
            (n.get("Resources", {}) for n in nodes if n.get("NodeID") == node_id), {}
        )
        return [t for t in TIERS if resources.get(slot_resource(t), 0) > 0]

    async def get(self, sandbox_id: str) -> SandboxInfo:
        row = await self.db(self.state.sandbox, sandbox_id)
        if row is None:
            raise SandboxNotFound(f"sandbox {sandbox_id!r} does not exist (or has ended)")
        if row.state in (LOST, MOVING):
            return row.sandbox()
        try:
            info: SandboxInfo = raise_failure(await self._call(row.host, "get", sandbox_id))
        except HostDown:
            return (await self.db(self.state.sandbox, sandbox_id) or row).sandbox()
        except SandboxNotFound:
            await self._forget(sandbox_id, row.placement)
            raise
        await self.db(self.state.refresh, info)
        self.known[info.id] = info
        return info

    async def list(self) -> builtins.list[SandboxInfo]:
        """Every sandbox the cluster knows, lost ones included, by id."""
        return [row.sandbox() for row in await self.db(self.state.sandboxes)]

    async def placement(self) -> dict[str, builtins.list[str]]:
        """Sandbox ids by host name."""
        found: dict[str, builtins.list[str]] = {}
        for row in await self.db(self.state.sandboxes):
            found.setdefault(row.host, []).append(row.id)
        return found

    async def kill(self, sandbox_id: str) -> None:
        """Kill the sandbox and free its slot; a lost sandbox's record is removed (its host
        kills it if it comes back)."""
        row = await self.db(self.state.sandbox, sandbox_id)
        if row is None:
            raise SandboxNotFound(f"sandbox {sandbox_id!r} does not exist (or has ended)")
        if row.state == MOVING:
            raise Conflict(f"sandbox {sandbox_id} is being restarted on another host; retry in a few seconds")
        if row.state != LOST:
            try:
                out = await self._call(row.host, "kill", sandbox_id)
                if not (isinstance(out, Failure) and out.code == SandboxNotFound.code):
                    raise_failure(out)
            except HostDown:
                pass
        elif row.movable:  # its copy on shared storage goes too (any host can remove it)
            with contextlib.suppress(EngineError):
                await self._call(await self.any_host(), "unpublish", sandbox_id)
        await self._forget(sandbox_id, row.placement)

    async def owner_host(self, sandbox_id: str) -> str:
        """The live host that runs ``sandbox_id`` (SandboxNotFound, or HostDown if lost)."""
        row = await self.db(self.state.sandbox, sandbox_id)
        if row is None:
            raise SandboxNotFound(f"sandbox {sandbox_id!r} does not exist (or has ended)")
        if row.state in (LOST, MOVING):
            raise HostDown(
                f"sandbox {sandbox_id} is {row.state}: {row.message or ''} (host {row.host} is down)"
            )
        return row.host

    async def move_if_lost(self, sandbox_id: str) -> None:
        """If ``sandbox_id`` was lost with its host while stopped or archived (a workspace),
        re-create it on a live host from its copy on shared storage, archived: a start then
        restores it. Lost otherwise: HostDown saying why (its disk is only on that host)."""
        row = await self.db(self.state.sandbox, sandbox_id)
        if row is None or row.state not in (LOST, MOVING):
            return
        if row.state == MOVING or not row.movable:
            await self.owner_host(sandbox_id)  # raises HostDown with the row's words
        if await self.db(self.state.claim_move, sandbox_id) is None:
            raise Conflict(
                f"sandbox {sandbox_id} is being restarted on another host by "
                f"another request; retry in a few seconds"
            )
        # Its old slot first: Ray may have moved it to a live host when the node died.
        await self._placer.release(row.placement)
        try:
            slot, host = await self._place(str(row.info.get("isolation")))
            try:
                info: SandboxInfo = raise_failure(await self._call(host, "adopt", sandbox_id))
                await self.db(self.state.moved, info, host, slot.name)
            except BaseException:
                await self._placer.release(slot.name)
                raise
        except BaseException:
            await self.db(self.state.unclaim, sandbox_id)
            raise
        log.info("sandbox %s moved from lost host %s to %s", sandbox_id, row.host, host)
        self.known[sandbox_id] = info

    def stream_url(self, host: str) -> str:
        """Where host ``host`` serves streams (learnt from its pings)."""
        url = self.stream_urls.get(host)
        if not url:
            raise SandboxUnavailable(f"host {host} has not answered this replica yet; retry in a second")
        return url

    async def any_host(self) -> str:
        """A live host, for calls that concern no sandbox (template lists)."""
        for row in await self.db(self.state.hosts):
            if row.state == ALIVE:
                return row.name
        raise SandboxUnavailable("no Stockade host is up; start one with 'stockade host'")

    async def live_hosts(self) -> builtins.list[HostRow]:
        """The hosts that are up, those not draining first."""
        rows = [row for row in await self.db(self.state.hosts) if row.state == ALIVE]
        if not rows:
            raise SandboxUnavailable("no Stockade host is up; start one with 'stockade host'")
        return sorted(rows, key=lambda row: row.draining)

    async def ask(self, host: str, method: str, *args: Any) -> Any:
        """The host actor's own ``method`` (not an engine call); its engine errors re-raised."""
        return raise_failure(await self._call(host, method, *args))

    async def call(self, host: str, service: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``engine.<service>.<method>(...)`` on ``host``; its engine errors re-raised here."""
        out = raise_failure(await self._call(host, "call", service, method, args, kwargs))
        if isinstance(out, SandboxInfo):  # a state change (pause, stop, timeout...): record it
            self.known[out.id] = out
            await self.db(self.state.refresh, out)
        return out

    async def _forget(self, sandbox_id: str, placement: str) -> None:
        self.known.pop(sandbox_id, None)
        await self.db(self.state.remove_sandbox, sandbox_id)
        await self._placer.release(placement)

    # -- watching hosts --------------------------------------------------------------------
    async def watch(self) -> None:
        """Forever: find host actors, mark silent ones down, reconcile returning ones."""
        while True:
            try:
                await self.check_hosts()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                log.exception("checking the cluster's hosts failed")
            await asyncio.sleep(WATCH_EVERY)

    async def check_hosts(self) -> None:
        """One round: hosts whose actor vanished are down; the others are pinged, and synced
        when they come back and every :data:`SYNC_EVERY` seconds."""
        named = await asyncio.to_thread(self._ray.util.list_named_actors, all_namespaces=True)
        present = {
            a["name"][len("host-") :]
            for a in named
            if a["namespace"] == NAMESPACE and a["name"].startswith("host-")
        }
        for row in await self.db(self.state.hosts):
            if row.state == ALIVE and row.name not in present:
                self._actors.pop(row.name, None)
                await self.db(self.state.host_down, row.name, HOST_LOST)
                log.warning("host %s is gone; its sandboxes are lost", row.name)
        due = time.monotonic() >= self._next_sync
        if due:
            self._next_sync = time.monotonic() + SYNC_EVERY
        await asyncio.gather(*(self._ping(name, due) for name in present))

    async def _ping(self, host: str, sync: bool) -> None:
        with contextlib.suppress(HostDown):
            info: HostInfo = await self._call(host, "describe", timeout=PING_TIMEOUT)
            self.stream_urls[host] = info.stream_url
            if not info.ready:  # still re-attaching its sandboxes: not yet a live host
                return
            if await self.db(self.state.host_seen, host, info.node_id):
                log.info("host %s is up on node %s", host, info.node_id)
                sync = True
            if sync:
                await self._sync(host)

    async def _sync(self, host: str) -> None:
        """Agree with what the host runs: refresh its sandboxes' rows (``running`` again after
        a return), forget the ones it ended by itself (a timeout) and free their slots, and
        kill the ones no row claims."""
        # Rows first: a row is written only after its sandbox exists on the host, so every
        # row read now names a sandbox the host lists below unless that sandbox has ended.
        rows = {row.id: row for row in await self.db(self.state.sandboxes, host)}
        running = {info.id: info for info in await self._call(host, "list")}
        for sandbox_id, row in rows.items():
            if row.state == MOVING:  # another host is taking it over: leave it alone
                continue
            if sandbox_id in running:
                await self.db(self.state.refresh, running[sandbox_id])
            else:
                await self._forget(sandbox_id, row.placement)
        elsewhere = {
            row.id for row in await self.db(self.state.sandboxes) if row.host != host and row.state != LOST
        }
        for sandbox_id, info in running.items():
            if sandbox_id in rows:
                continue
            if sandbox_id in elsewhere or info.created_at < time.time() - ORPHAN_AGE:
                log.warning("killing sandbox %s on host %s: no record claims it", sandbox_id, host)
                # Not its shared copy: a workspace may have moved to another host from it.
                await self._call(host, "kill", sandbox_id, False)

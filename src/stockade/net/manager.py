"""The network side of an engine: attach a sandbox, change its policy, detach it, clean up.

State lives in ``<data_dir>/net/``: ``engine.json`` (the engine's subnet) and one
``sandboxes/<id>.json`` per attached sandbox (address, names, policy). Host objects are named
after a tag derived from the data directory, so a restarted engine finds (and an engine that
crashed gets rid of) exactly its own: namespaces ``stockade-<tag>-*``, veths ``sv<tag>*``, the
table ``inet stockade_<tag>``, the anchor bridge ``sg<tag>`` and the uplink ``su<tag>``.

The shared part (table, anchor, resolver, egress proxy) comes up with the first networked sandbox and goes
when the engine closes with none left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import ssl
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import host, links, rules
from .authority import Authority
from .config import NetConfig
from .dns import Client, Resolver
from .egresslog import EgressLog
from .host import NetError
from .intercept import Injection
from .policy import Net, NetworkPolicy, admissible
from .proxy import EgressProxy, Sandbox
from .rules import EngineNet
from .vault import Vault

#: Engine subnets are /20s carved from 10.128.0.0/10 (1024 of them); no sandbox may reach any
#: of it (other engines' sandboxes included).
POOL = Net("10.128.0.0/10")
SUBNET_PREFIX = 20
CA_ENV = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
SANDBOX_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"


@dataclass
class Attachment:
    """One sandbox's place on the network (persisted)."""

    sandbox_id: str
    address: str
    veth: str
    netns: str
    policy: dict[str, Any]
    owner: str = ""  # whose secrets ``secrets`` names
    secrets: dict[str, str] = field(default_factory=dict)  # placeholder -> secret name

    @property
    def sid(self) -> str:
        return self.sandbox_id.lower()

    @property
    def netns_path(self) -> Path:
        return host.NETNS_DIR / self.netns


def engine_tag(data_dir: Path) -> str:
    """Five hex digits naming one data directory's host objects."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:5]


def _routes() -> list[Net]:
    import subprocess

    out = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True, timeout=30
    ).stdout
    found = []
    for route in json.loads(out or "[]"):
        with contextlib.suppress(ValueError):
            if route.get("dst", "default") != "default":
                found.append(Net(route["dst"], strict=False))
    return found


class NetworkManager:
    """Networks of the sandboxes of one data directory."""

    def __init__(self, data_dir: Path, config: NetConfig) -> None:
        self.config = config
        self.dir = data_dir / "net"
        self.tag = engine_tag(data_dir)
        self._net: EngineNet | None = None
        self._resolver: Resolver | None = None
        self._proxy: EgressProxy | None = None
        self.egress_log = EgressLog(self.dir / "sandboxes", config.egress_log_bytes)
        self._attached: dict[str, Attachment] = {}
        self.vault = Vault(data_dir)
        self.authority = Authority(data_dir, config.ca_bundle)
        self._lock = asyncio.Lock()
        self._cursor = random.randrange(1 << 12)

    # -- the engine's shared part --------------------------------------------------------------
    @property
    def net(self) -> EngineNet:
        if self._net is None:
            self._net = self._load_or_choose_subnet()
        return self._net

    def _load_or_choose_subnet(self) -> EngineNet:
        path = self.dir / "engine.json"
        try:
            index = int(json.loads(path.read_text())["index"])
        except (OSError, ValueError, KeyError):
            count = 1 << (SUBNET_PREFIX - POOL.prefixlen)
            start = int(self.tag, 16) % count
            taken = [r for r in _routes()]
            for step in range(count):
                index = (start + step) % count
                candidate = self._subnet(index)
                if not any(candidate.overlaps(r) for r in taken):
                    break
            else:
                raise NetError("no free /20 left in 10.128.0.0/10 for sandbox addresses")
            self.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"index": index}))
        return EngineNet(
            tag=self.tag, subnet=self._subnet(index), mark=0x53540000 | index, route_table=10000 + index
        )

    @staticmethod
    def _subnet(index: int) -> Net:
        size = 1 << (32 - SUBNET_PREFIX)
        return Net((int(POOL.network_address) + index * size, SUBNET_PREFIX))

    async def _ensure_up(self) -> None:
        if self._resolver is not None:
            return
        net = self.net
        host.sysctl_set("net.ipv4.ip_forward", "1")
        await links.create_anchor(net)
        uplink = self.config.uplink_netns is not None
        await host.nft(
            rules.engine_table(
                net, mark_uplink=uplink, extra_denied=(POOL, net.subnet), proxy_port=self.config.proxy_port
            )
        )
        if uplink:
            assert self.config.uplink_netns is not None
            await links.create_uplink(net, self.config.uplink_netns)
        resolver = Resolver(
            net.gateway,
            self.config.upstream_dns,
            self._admit,
            lambda a: admissible(a, (POOL,)),
            (self.config.dns_min_ttl, self.config.dns_max_ttl),
            report=self._report,
            rate=(self.config.dns_rate, self.config.dns_burst),
        )
        proxy = EgressProxy(
            net.gateway,
            resolver.pins,
            self._report,
            mark=net.mark if uplink else None,
            port=self.config.proxy_port,
            max_total=self.config.proxy_max_connections,
            authority=self.authority,
            upstream_tls=self._upstream_tls(),
        )
        await resolver.start()
        try:
            await proxy.start()
        except BaseException:
            await resolver.close()
            raise
        self._resolver, self._proxy = resolver, proxy
        for att in self._attached.values():  # after a restart: rules of the live ones again
            await self._add_rules(att)

    def _upstream_tls(self) -> ssl.SSLContext:
        """How the proxy verifies a real host it re-originates TLS to: the operator's bundle."""
        bundle = self.config.ca_bundle
        ctx = ssl.create_default_context(cafile=str(bundle) if bundle else None)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _report(self, sandbox_id: str, **entry: Any) -> None:
        if sandbox_id in self._attached:  # a connection cut by the kill is not logged after it
            self.egress_log.write(sandbox_id, **entry)

    async def _admit(self, sandbox_id: str, addresses: dict[str, int]) -> None:
        att = self._attached.get(sandbox_id)
        if att is not None:
            await host.nft(rules.admit(self.net, att.sid, addresses))

    # -- sandboxes ------------------------------------------------------------------------------
    def _state(self, sandbox_id: str) -> Path:
        return self.dir / "sandboxes" / f"{sandbox_id}.json"

    def netns_path(self, sandbox_id: str) -> Path:
        return host.NETNS_DIR / f"stockade-{self.tag}-{sandbox_id}"

    def resolv_conf(self, sandbox_id: str) -> Path:
        return self.dir / "sandboxes" / f"{sandbox_id}.resolv.conf"

    def _allocate(self) -> str:
        used = {a.address for a in self._attached.values()}
        pool = self.net.host_addresses()
        for _ in range(len(pool)):
            self._cursor = (self._cursor + 1) % len(pool)
            address = str(ipaddress.IPv4Address(pool[self._cursor]))
            if address not in used:
                return address
        raise NetError(f"all {len(pool)} sandbox addresses of {self.net.subnet} are in use")

    def _limits(self, policy: NetworkPolicy) -> tuple[int, int]:
        return (
            policy.max_connections or self.config.max_connections,
            policy.bandwidth_mbit or self.config.bandwidth_mbit,
        )

    def _allowed(self, policy: NetworkPolicy) -> list[Net]:
        return policy.allowed_ranges((POOL,))

    def ca_env(self, secrets: bool = False) -> dict[str, str]:
        """Variables making curl, pip, requests and Node trust the installed CA bundle."""
        return {k: SANDBOX_CA_PATH for k in CA_ENV} if self.config.ca_bundle or secrets else {}

    def ca_bundle(self, secrets: bool = False) -> Path | None:
        """The bundle a sandbox trusts: the operator's, plus the installation CA with secrets."""
        return self.authority.sandbox_bundle() if secrets else self.config.ca_bundle

    async def attach(
        self, sandbox_id: str, policy: NetworkPolicy, owner: str = "", secrets: dict[str, str] | None = None
    ) -> Attachment:
        """Give ``sandbox_id`` a namespace wired to the host under ``policy``; the egress
        proxy injects ``secrets`` (placeholder -> name of one of ``owner``'s secrets)."""
        async with self._lock:  # held only for the shared part and the address
            await self._ensure_up()
            net = self.net
            att = Attachment(
                sandbox_id=sandbox_id,
                address=self._allocate(),
                veth=f"{net.veth_prefix}{sandbox_id[-8:]}",
                netns=f"{net.netns_prefix()}{sandbox_id}",
                policy=policy.public(),
                owner=owner,
                secrets=dict(secrets or {}),
            )
            self._attached[sandbox_id] = att
        try:
            state = self._state(sandbox_id)
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps(asdict(att)))
            conf = self.resolv_conf(sandbox_id)
            conf.write_text(f"nameserver {net.gateway}\noptions timeout:2 attempts:2\n")
            conf.chmod(0o644)
            await links.create_sandbox_link(net, att.netns, att.veth, att.address, self._limits(policy)[1])
            await self._add_rules(att)
        except BaseException:
            await self.detach(sandbox_id)
            raise
        return att

    async def _add_rules(self, att: Attachment) -> None:
        policy = NetworkPolicy.parse(att.policy) or NetworkPolicy()
        await host.nft(
            rules.add_sandbox(
                self.net,
                att.sid,
                att.veth,
                att.address,
                self._allowed(policy),
                self._limits(policy)[0],
                self.config.proxy_port,
            )
        )
        self._register(att, policy)

    def _register(self, att: Attachment, policy: NetworkPolicy) -> None:
        assert self._resolver is not None and self._proxy is not None
        self._resolver.clients[att.address] = Client(att.sandbox_id, policy)
        old = self._proxy.clients.get(att.address)
        self._proxy.clients[att.address] = Sandbox(
            att.sandbox_id,
            policy,
            self._allowed(policy),
            self._limits(policy)[0],
            tasks=old.tasks if old else set(),
            secrets=self._injections(att) if att.secrets else None,
        )

    def _injections(self, att: Attachment) -> Callable[[str], list[Injection]]:
        """For the proxy: the secrets of ``att`` bound to a host, read from the vault each
        time (a deleted or re-bound secret counts from the next connection on)."""

        def bound(host_name: str) -> list[Injection]:
            found = []
            for placeholder, name in att.secrets.items():
                secret = self.vault.get(att.owner, name)
                if secret is not None and secret.bound_to(host_name):
                    value = self.vault.reveal(att.owner, name)
                    if value is not None:
                        found.append(Injection(name, placeholder.encode(), value, secret.inject_body))
            return found

        return bound

    def traffic(self, sandbox_id: str) -> tuple[int, int] | None:
        """Bytes the sandbox received and sent so far (its host-side veth's counters, seen
        from the host: what the host sent is what the sandbox received); None if it has no
        network."""
        att = self._attached.get(sandbox_id)
        if att is None:
            return None
        stats = Path("/sys/class/net") / att.veth / "statistics"
        try:
            return (int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text()))
        except (OSError, ValueError):
            return None

    async def set_policy(self, sandbox_id: str, policy: NetworkPolicy) -> None:
        """Replace a sandbox's rules; new connections follow them at once."""
        async with self._lock:
            att = self._attached[sandbox_id]
            old = NetworkPolicy.parse(att.policy) or NetworkPolicy()
            await host.nft(
                rules.update_sandbox(self.net, att.sid, self._allowed(policy), self._limits(policy)[0])
            )
            if self._limits(policy)[1] != self._limits(old)[1]:
                await links.set_bandwidth(att.netns, att.veth, self._limits(policy)[1])
            att.policy = policy.public()
            self._state(sandbox_id).write_text(json.dumps(asdict(att)))
            assert self._resolver is not None
            self._resolver.pins.forget(sandbox_id)  # as the resolved-address set was flushed
            self._register(att, policy)

    async def detach(self, sandbox_id: str) -> None:
        """Remove every trace of a sandbox's network. Safe to repeat."""
        async with self._lock:
            await self._detach(sandbox_id)

    async def _detach(self, sandbox_id: str) -> None:
        att = self._attached.pop(sandbox_id, None)
        if att is None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                att = Attachment(**json.loads(self._state(sandbox_id).read_text()))
        veth = att.veth if att else f"sv{self.tag}{sandbox_id[-8:]}"
        netns = f"stockade-{self.tag}-{sandbox_id}"
        if att is None and not (host.NETNS_DIR / netns).exists() and not host.links_sync(veth):
            return  # never networked (or already gone)
        if att and self._resolver:
            self._resolver.forget(att.address, sandbox_id)
        if att and self._proxy:
            self._proxy.drop(att.address)
        table = f"stockade_{self.tag}"
        statements = rules.remove_sandbox(table, sandbox_id.lower(), veth, att.address if att else None)
        try:
            await host.nft("\n".join(statements))
        except NetError:  # partly gone already: remove what is left, one by one
            for statement in statements:
                with contextlib.suppress(NetError):
                    await host.nft(statement)
        await links.remove_sandbox_link(netns, veth)
        for path in (self._state(sandbox_id), self.resolv_conf(sandbox_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.egress_log.remove(sandbox_id)

    def policy(self, sandbox_id: str) -> dict[str, Any] | None:
        att = self._attached.get(sandbox_id)
        return dict(att.policy) if att else None

    def egress(self, sandbox_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` entries of a sandbox's egress log (docs/network.md)."""
        return self.egress_log.read(sandbox_id, limit)

    # -- start and stop ------------------------------------------------------------------------
    async def recover(self, live: set[str]) -> None:
        """After (re)start: keep the networks of ``live`` sandboxes, remove everything else."""
        async with self._lock:
            states = self.dir / "sandboxes"
            found = sorted(p.stem for p in states.glob("*.json")) if states.is_dir() else []
            for sandbox_id in found:
                if sandbox_id in live:
                    with contextlib.suppress(OSError, ValueError, TypeError):
                        self._attached[sandbox_id] = Attachment(
                            **json.loads(self._state(sandbox_id).read_text())
                        )
                        continue
                await self._detach(sandbox_id)
            if not (self.dir / "engine.json").exists() and not self._leftovers():
                return
            keep_ns = {a.netns for a in self._attached.values()}
            keep_veth = {a.veth for a in self._attached.values()}
            prefix = f"stockade-{self.tag}-"
            for ns in host.netns_sync(prefix):
                if ns not in keep_ns:
                    await self._detach(ns[len(prefix) :])
            for veth in host.links_sync(f"sv{self.tag}"):
                if veth not in keep_veth:
                    with contextlib.suppress(NetError):
                        await host.run("ip", "link", "del", veth)
            if self._attached:
                await self._ensure_up()
            else:
                await self._teardown()

    def _leftovers(self) -> bool:
        return bool(
            host.netns_sync(f"stockade-{self.tag}-")
            or host.links_sync(f"sv{self.tag}")
            or host.links_sync(f"sg{self.tag}")
            or f"stockade_{self.tag}" in host.tables_sync()
        )

    async def close(self) -> None:
        """Stop the resolver and proxy; remove the shared part if no sandbox uses it any more."""
        async with self._lock:
            if self._proxy is not None:
                await self._proxy.close()
                self._proxy = None
            if self._resolver is not None:
                await self._resolver.close()
                self._resolver = None
            if not self._attached and self._net is not None:
                await self._teardown()

    async def _teardown(self) -> None:
        net = self.net
        if net.table in await asyncio.to_thread(host.tables_sync):
            await host.nft(f"delete table inet {net.table}")
        await links.remove_engine_links(net)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / "engine.json")
        self._net = None

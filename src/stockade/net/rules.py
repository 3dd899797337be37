"""The nftables rules of one engine, as ``nft -f`` text.

One table per engine (``inet stockade_<tag>``) holds what every sandbox shares; each sandbox
adds one chain and two sets, reached through a verdict map keyed by its host-side veth::

    forward:  iif sv<tag>*  -> egress: ipv6 drop | spoofed source drop | always-denied reject
                                       | vmap iif -> sb_<id> | reject
              oif sv<tag>*  -> ingress: anything new drop (nothing dials in)
    sb_<id>:  established accept | too many connections reject
              | resolved names accept | allowed CIDRs accept
    input:    iif sv<tag>*  -> spoofed drop | DNS to the gateway accept
                              | redirected to the egress proxy accept | reject (the host)
    to_proxy: (nat) iif sv<tag>* to a non-local, not always-denied address -> vmap iif -> px_<id>
    px_<id>:  tcp dport {80, 443} to a resolved or CIDR-allowed address -> redirect to the proxy
    postrouting: from the sandbox subnet out of anything but a sandbox veth -> masquerade

Sandbox traffic is identified by interface, never by source address alone: the pair
(veth, address) must be in the ``members`` set, so a sandbox cannot pose as another one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

from .policy import ALWAYS_DENIED, Net

REJECT = "reject with icmpx type admin-prohibited"


@dataclass(frozen=True)
class EngineNet:
    """The names and addresses of one engine's network (derived from its data directory)."""

    tag: str  # 5 hex digits
    subnet: Net  # a /20 for the gateway, the sandboxes and the uplink link
    mark: int
    route_table: int

    @property
    def table(self) -> str:
        return f"stockade_{self.tag}"

    @property
    def veth_prefix(self) -> str:
        return f"sv{self.tag}"

    @property
    def anchor(self) -> str:
        """A port-less bridge that holds the gateway address the resolver listens on."""
        return f"sg{self.tag}"

    @property
    def uplink(self) -> str:
        return f"su{self.tag}"

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def uplink_host(self) -> str:
        return str(self.subnet.broadcast_address - 2)

    @property
    def uplink_peer(self) -> str:
        return str(self.subnet.broadcast_address - 1)

    def host_addresses(self) -> range:
        """Integer addresses sandboxes may get."""
        return range(int(self.subnet.network_address) + 2, int(self.subnet.broadcast_address) - 3)

    def netns_prefix(self) -> str:
        return f"stockade-{self.tag}-"


def _elements(nets: Iterable[Net | str]) -> str:
    items = [str(n) for n in nets]
    return f"elements = {{ {', '.join(items)} }}" if items else ""


def engine_table(net: EngineNet, *, mark_uplink: bool, extra_denied: Iterable[Net], proxy_port: int) -> str:
    """The whole shared table, replacing any previous one (sandbox chains are added after).

    TCP to ports 80 and 443 of an address a sandbox may reach (its ``px_<id>`` chain) is
    redirected to the egress proxy on ``proxy_port``, which checks the name (SNI or ``Host``)
    against the policy and the resolver's answers; the host's own addresses are never
    redirected (``to_host`` refuses them), nor are always-denied ones (``egress`` rejects them)."""
    t, vp, gw = net.table, net.veth_prefix, net.gateway
    denied = _elements(ipaddress.collapse_addresses([*ALWAYS_DENIED, *extra_denied]))
    mark = f'        iifname "{vp}*" meta mark set {net.mark:#x}\n' if mark_uplink else ""
    return f"""
table inet {t}
delete table inet {t}
table inet {t} {{
    set denied {{ type ipv4_addr; flags interval; {denied} }}
    set members {{ type ifname . ipv4_addr; }}
    map sandboxes {{ type ifname : verdict; }}
    map proxied {{ type ifname : verdict; }}
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
{mark}    }}
    chain input {{
        type filter hook input priority filter - 5; policy accept;
        iifname "{vp}*" jump to_host
    }}
    chain to_host {{
        meta nfproto ipv6 drop
        iifname . ip saddr != @members drop
        ip daddr {gw} udp dport 53 accept
        ip daddr {gw} tcp dport 53 accept
        ip daddr {gw} tcp dport {proxy_port} ct status dnat accept
        {REJECT}
    }}
    chain to_proxy {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{vp}*" meta nfproto ipv4 tcp dport {{ 80, 443 }} jump proxy_candidates
    }}
    chain proxy_candidates {{
        ip daddr @denied return
        fib daddr type local return
        iifname vmap @proxied
    }}
    chain forward {{
        type filter hook forward priority filter - 5; policy accept;
        iifname "{vp}*" jump egress
        oifname "{vp}*" jump ingress
    }}
    chain egress {{
        meta nfproto ipv6 drop
        iifname . ip saddr != @members drop
        ip daddr @denied {REJECT}
        iifname vmap @sandboxes
        {REJECT}
    }}
    chain ingress {{
        ct state new,invalid,untracked drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {net.subnet} oifname != "{vp}*" masquerade
    }}
}}
"""


def _chain_body(t: str, sid: str, max_connections: int) -> str:
    return (
        f"add rule inet {t} sb_{sid} ct state established,related accept\n"
        f"add rule inet {t} sb_{sid} ct state new ct count over {max_connections} {REJECT}\n"
        f"add rule inet {t} sb_{sid} ip daddr @r_{sid} accept\n"
        f"add rule inet {t} sb_{sid} ip daddr @c_{sid} accept\n"
    )


def add_sandbox(
    net: EngineNet,
    sid: str,
    veth: str,
    address: str,
    allowed: list[Net],
    max_connections: int,
    proxy_port: int,
) -> str:
    """Script adding one sandbox's sets, chains and map entries."""
    t = net.table
    return (
        f"add set inet {t} c_{sid} {{ type ipv4_addr; flags interval; {_elements(allowed)} }}\n"
        f"add set inet {t} r_{sid} {{ type ipv4_addr; flags timeout; }}\n"
        f"add chain inet {t} sb_{sid}\n"
        + _chain_body(t, sid, max_connections)
        + f"add chain inet {t} px_{sid}\n"
        f"add rule inet {t} px_{sid} ip daddr @r_{sid} meta l4proto tcp redirect to :{proxy_port}\n"
        f"add rule inet {t} px_{sid} ip daddr @c_{sid} meta l4proto tcp redirect to :{proxy_port}\n"
        f'add element inet {t} members {{ "{veth}" . {address} }}\n'
        f'add element inet {t} sandboxes {{ "{veth}" : jump sb_{sid} }}\n'
        f'add element inet {t} proxied {{ "{veth}" : jump px_{sid} }}\n'
    )


def update_sandbox(net: EngineNet, sid: str, allowed: list[Net], max_connections: int) -> str:
    """Script replacing one sandbox's rules; resolved addresses are forgotten."""
    t = net.table
    script = (
        f"flush set inet {t} c_{sid}\nflush set inet {t} r_{sid}\n"
        f"flush chain inet {t} sb_{sid}\n" + _chain_body(t, sid, max_connections)
    )
    if allowed:
        script += f"add element inet {t} c_{sid} {{ {', '.join(map(str, allowed))} }}\n"
    return script


def remove_sandbox(t: str, sid: str, veth: str, address: str | None) -> list[str]:
    """Statements removing one sandbox from table ``t`` (any may already be gone)."""
    out = [
        f'delete element inet {t} sandboxes {{ "{veth}" }}',
        f'delete element inet {t} proxied {{ "{veth}" }}',
    ]
    if address:
        out.append(f'delete element inet {t} members {{ "{veth}" . {address} }}')
    out += [
        f"delete chain inet {t} sb_{sid}",
        f"delete chain inet {t} px_{sid}",
        f"delete set inet {t} c_{sid}",
        f"delete set inet {t} r_{sid}",
    ]
    return out


def admit(net: EngineNet, sid: str, addresses: dict[str, int]) -> str:
    """Script (re)adding resolved addresses with their timeouts in seconds."""
    t, items = net.table, ", ".join(addresses)
    timed = ", ".join(f"{a} timeout {s}s" for a, s in addresses.items())
    # add (so delete cannot fail), delete, add again: refreshes the timeout atomically.
    return (
        f"add element inet {t} r_{sid} {{ {items} }}\n"
        f"delete element inet {t} r_{sid} {{ {items} }}\n"
        f"add element inet {t} r_{sid} {{ {timed} }}\n"
    )

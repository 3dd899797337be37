"""Network namespaces, veth pairs, routes (``ip``) and bandwidth shaping (``tc``).

A sandbox gets its own named namespace (``/run/netns/stockade-<tag>-<id>``) holding ``lo`` and
``eth0``; ``eth0``'s peer on the host is ``sv<tag><id8>``. There is no shared layer 2: each
pair is routed (a /32 each way, like Calico), so sandboxes cannot talk to each other except
through the host's forward hook, which refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from .host import NETNS_DIR, NetError, run
from .rules import EngineNet


async def create_sandbox_link(net: EngineNet, netns: str, veth: str, address: str, mbit: int) -> Path:
    """Make the namespace and its wiring; returns the namespace's path."""
    gw = net.gateway
    await run(
        "ip",
        "-batch",
        "-",
        stdin=(
            f"netns add {netns}\n"
            f"link add {veth} type veth peer name eth0 netns {netns}\n"
            f"link set {veth} addrgenmode none\n"
            f"link set {veth} up\n"
            f"addr add {gw}/32 dev {veth} scope link\n"
            f"route add {address}/32 dev {veth} scope link\n"
        ),
    )
    inside = run(
        "ip",
        "-n",
        netns,
        "-batch",
        "-",
        stdin=(
            "link set lo up\n"
            "link set eth0 addrgenmode none\n"  # IPv6 is off: not even a link-local address
            f"addr add {address}/32 dev eth0\n"
            "link set eth0 up\n"
            f"route add {gw} dev eth0 scope link\n"
            f"route add default via {gw} dev eth0 onlink\n"
        ),
    )
    await asyncio.gather(inside, set_bandwidth(netns, veth, mbit))
    return NETNS_DIR / netns


def _tbf(mbit: int) -> list[str]:
    return ["root", "tbf", "rate", f"{mbit}mbit", "burst", "256kb", "latency", "50ms"]


async def set_bandwidth(netns: str, veth: str, mbit: int) -> None:
    """Shape both ways with a queue (TCP copes with it far better than with drops): the host
    end's egress is the sandbox's download, eth0's egress (in the namespace, out of the
    sandbox's reach: it has no CAP_NET_ADMIN there) its upload."""
    await asyncio.gather(
        run("tc", "qdisc", "replace", "dev", veth, *_tbf(mbit)),
        run("tc", "-n", netns, "qdisc", "replace", "dev", "eth0", *_tbf(mbit)),
    )


async def remove_sandbox_link(netns: str, veth: str) -> None:
    """Remove the veth pair and the namespace; anything already gone is fine."""
    script = "".join(
        [
            f"link del {veth}\n" if Path("/sys/class/net", veth).exists() else "",
            f"netns del {netns}\n" if (NETNS_DIR / netns).exists() else "",
        ]
    )
    if script:
        await run("ip", "-force", "-batch", "-", stdin=script)


async def create_anchor(net: EngineNet) -> None:
    """The engine's gateway address on a port-less bridge (it reserves the /20 too)."""
    if not Path("/sys/class/net", net.anchor).exists():
        await run(
            "ip",
            "-batch",
            "-",
            stdin=(
                f"link add {net.anchor} type bridge\n"
                f"addr add {net.gateway}/{net.subnet.prefixlen} dev {net.anchor}\n"
                f"link set {net.anchor} up\n"
            ),
        )


async def create_uplink(net: EngineNet, uplink_netns: Path) -> None:
    """Route all sandbox egress into ``uplink_netns`` through a veth pair, by firewall mark."""
    name, peer = uplink_netns.name, f"up{net.tag}"  # several engines may share one uplink
    if not Path("/sys/class/net", net.uplink).exists():
        await run(
            "ip",
            "-batch",
            "-",
            stdin=(
                f"link add {net.uplink} type veth peer name {peer} netns {name}\n"
                f"addr add {net.uplink_host}/30 dev {net.uplink}\n"
                f"link set {net.uplink} up\n"
            ),
        )
        await run(
            "ip",
            "-n",
            name,
            "-batch",
            "-",
            stdin=(f"addr add {net.uplink_peer}/30 dev {peer}\nlink set {peer} up\n"),
        )
    await run(
        "ip",
        "-batch",
        "-",
        stdin=(f"route replace default via {net.uplink_peer} dev {net.uplink} table {net.route_table}\n"),
    )
    rules = await run("ip", "rule", "show", "fwmark", f"{net.mark:#x}")
    if not rules.strip():
        await run(
            "ip",
            "rule",
            "add",
            "fwmark",
            f"{net.mark:#x}",
            "lookup",
            str(net.route_table),
            "priority",
            "1000",
        )


async def remove_engine_links(net: EngineNet) -> None:
    """Remove the anchor, the uplink and the policy-routing rule."""
    while (await run("ip", "rule", "show", "fwmark", f"{net.mark:#x}")).strip():
        await run("ip", "rule", "del", "fwmark", f"{net.mark:#x}")
    with contextlib.suppress(NetError):
        await run("ip", "route", "flush", "table", str(net.route_table))
    for dev in (net.uplink, net.anchor):
        if Path("/sys/class/net", dev).exists():
            await run("ip", "link", "del", dev)

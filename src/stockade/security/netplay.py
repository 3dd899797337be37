"""The outside world for network attacks: a network namespace the battery creates and the
sandboxes' uplink goes into (``STOCKADE_NET_UPLINK_NETNS``), so no packet can leave the machine
even if a rule under test is broken.

It plays a DNS server (the engine's upstream, and a second "foreign" resolver), TCP (on the
played port, 80 and 443) and UDP listeners on a public address the policy allows, a public
address it denies, the cloud metadata address and a private address, and logs every DNS
question, connection and datagram it gets, with source and destination. The host judges
attacks by that log, never by their word.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

ALLOWED = "203.0.113.10"  # allowed.test, the one destination the policy opens
DENIED = "203.0.113.11"  # denied.test is not in the policy; neither is this address
FOREIGN_RESOLVER = "198.51.100.53"  # a resolver that is not the sandbox's
METADATA = "169.254.169.254"
TCP_PORT, UDP_PORT = 8080, 9999

SERVER = r"""
import asyncio, json, sys
import dns.message, dns.rcode, dns.rrset
names = json.loads(sys.argv[1])
seen = {}

def log(**event):
    print(json.dumps(event), flush=True)

def answer(data, src, dst, proto):
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    name = q.question[0].name.to_text(omit_final_dot=True)
    log(kind="dns", src=src, dst=dst, name=name, proto=proto)
    seen[name] = seen.get(name, 0) + 1
    entry = names.get(name)
    if isinstance(entry, list) and entry and isinstance(entry[0], list):  # flips per question
        entry = entry[min(seen[name], len(entry)) - 1]
    if entry and q.question[0].rdtype == 1:
        for address in ([entry] if isinstance(entry, str) else entry):
            r.answer.append(dns.rrset.from_text(q.question[0].name, 1, "IN", "A", address))
    elif entry is None:
        r.set_rcode(dns.rcode.NXDOMAIN)
    return r.to_wire()

class Udp(asyncio.DatagramProtocol):
    def __init__(self, port): self.port = port
    def connection_made(self, transport): self.t = transport
    def datagram_received(self, data, addr):
        # Bound to 0.0.0.0: the destination address is not known per datagram; the DNS and
        # sink payloads carry what the judge needs.
        if self.port == 53:
            try:
                self.t.sendto(answer(data, addr[0], "?", "udp"), addr)
            except Exception as exc:
                log(kind="dns-garbage", src=addr[0], error=str(exc))
        else:
            log(kind="udp", src=addr[0], port=self.port, payload=data[:200].decode("latin-1"))

async def tcp_dns(reader, writer):
    src, dst = writer.get_extra_info("peername")[0], writer.get_extra_info("sockname")[0]
    try:
        size = int.from_bytes(await reader.readexactly(2), "big")
        reply = answer(await reader.readexactly(size), src, dst, "tcp")
        writer.write(len(reply).to_bytes(2, "big") + reply)
        await writer.drain()
    except Exception:
        pass
    writer.close()

async def hello(reader, writer):
    src, dst = writer.get_extra_info("peername")[0], writer.get_extra_info("sockname")[0]
    log(kind="tcp", src=src, dst=dst)
    writer.write(f"hello {dst}\n".encode())
    try:
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
    except Exception:
        pass
    writer.close()

async def main():
    loop = asyncio.get_running_loop()
    for port in (53, PORT_UDP):
        await loop.create_datagram_endpoint(lambda port=port: Udp(port), local_addr=("0.0.0.0", port))
    await asyncio.start_server(tcp_dns, "0.0.0.0", 53)
    server = await asyncio.start_server(hello, "0.0.0.0", PORT_TCP)
    for port in (80, 443):  # the web ports, which the egress proxy guards by name
        await asyncio.start_server(hello, "0.0.0.0", port)
    log(kind="ready")
    await server.serve_forever()

asyncio.run(main())
"""


@dataclass
class Playground:
    """``with Playground() as pg:`` a namespace ``pg.name`` with a veth to the host
    (``pg.host_side`` <-> ``pg.inside``, a /30 of 10.199.0.0/16) and the servers above."""

    token: str = field(default_factory=lambda: secrets.token_hex(3))
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = secrets.randbelow(250) + 1
        self.name = f"stksec-{self.token}"
        self.veth = f"stks{self.token}"
        self.host_side, self.inside = f"10.199.{n}.1", f"10.199.{n}.2"
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def names(self) -> dict[str, Any]:
        """What the played DNS answers (a list of lists: a different answer per question)."""
        return {
            "allowed.test": ALLOWED,
            "denied.test": DENIED,
            "rebind.allowed.test": METADATA,
            "private.allowed.test": self.inside,
            "host.allowed.test": self.host_side,
            "mixed.allowed.test": [ALLOWED, METADATA, self.inside],
            "flip.allowed.test": [[ALLOWED], [METADATA], [METADATA]],
        }

    def __enter__(self) -> "Playground":
        ns = self.name
        try:
            for cmd in (
                f"ip netns add {ns}",
                f"ip link add {self.veth} type veth peer name pg0 netns {ns}",
                f"ip addr add {self.host_side}/30 dev {self.veth}",
                f"ip link set {self.veth} up",
                f"ip -n {ns} addr add {self.inside}/30 dev pg0",
                f"ip -n {ns} link set pg0 up",
                f"ip -n {ns} link set lo up",
                *(
                    f"ip -n {ns} addr add {a}/32 dev lo"
                    for a in (ALLOWED, DENIED, FOREIGN_RESOLVER, METADATA)
                ),
            ):
                subprocess.run(cmd.split(), check=True, capture_output=True)
            code = SERVER.replace("PORT_UDP", str(UDP_PORT)).replace("PORT_TCP", str(TCP_PORT))
            # nsenter, not 'ip netns exec': that makes a mount namespace too, whose copies of
            # the sandboxes' disks would keep them busy after their unmount.
            self.proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", code, json.dumps(self.names)],
                stdout=subprocess.PIPE,
            )
            assert self.proc.stdout is not None
            first = json.loads(self.proc.stdout.readline() or b"{}")
            if first.get("kind") != "ready":
                raise RuntimeError("the playground's servers did not start")
        except BaseException:
            self.__exit__()
            raise
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self._reader is not None:
                self._reader.join(5)
            if self.proc.stdout:
                self.proc.stdout.close()
        subprocess.run(["ip", "link", "del", self.veth], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)

    def env(self) -> dict[str, str]:
        """The engine's environment: egress into the playground, DNS from it."""
        return {"STOCKADE_NET_UPLINK_NETNS": f"/run/netns/{self.name}", "STOCKADE_NET_DNS": self.inside}

    def seen(self, marker: str) -> list[dict[str, Any]]:
        """Events whose DNS name or payload carries ``marker``."""
        return [e for e in self.events if marker in e.get("name", "") or marker in e.get("payload", "")]

    def connections_to(self, *addresses: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("kind") == "tcp" and e.get("dst") in addresses]

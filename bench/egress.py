"""Issue 19 figure: request latency and throughput through the egress proxy vs. direct.

A sandbox allowed one name (``bench.test``) talks to the same HTTP server in a namespace this
script makes (the sandboxes' uplink, so nothing leaves the machine): on port 80, which the
firewall hands to the SNI/Host proxy, and on port 8080, which it forwards directly (the same
resolved address is open at the IP level). Rounds alternate the two, so drift hits both alike.

    .venv/bin/python -m bench.egress [--requests 200] [--bulk-mb 64] [--rounds 3] [--tier container]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys

from stockade import Sandbox

from ._common import PrivateDaemon, machine, table

ADDRESS = "203.0.113.80"
SERVER = r"""
import asyncio, sys
import dns.message, dns.rrset
ADDRESS, BULK = sys.argv[1], int(sys.argv[2]) << 20

class Dns(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr):
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        if q.question[0].rdtype == 1:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", ADDRESS))
        self.t.sendto(r.to_wire(), addr)

async def http(reader, writer):
    head = await reader.readuntil(b"\r\n\r\n")
    size = BULK if b" /bulk " in head.split(b"\r\n")[0] else 2
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
    chunk = bytes(1 << 20)
    while size > 0:
        writer.write(chunk[:min(size, len(chunk))])
        size -= min(size, len(chunk))
        await writer.drain()
    writer.close()

async def main():
    await asyncio.get_running_loop().create_datagram_endpoint(Dns, local_addr=("0.0.0.0", 53))
    for port in (80, 8080):
        await asyncio.start_server(http, "0.0.0.0", port)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""
CLIENT = r"""
import json, socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
address = socket.gethostbyname("bench.test")  # the proxy lets only resolved names through

def get(path):
    s = socket.create_connection((address, port), timeout=30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench.test\r\n\r\n".encode())
    size = 0
    while chunk := s.recv(1 << 16):
        size += len(chunk)
    s.close()
    return size

latency = []
for _ in range(n):
    t = time.perf_counter()
    get("/small")
    latency.append(time.perf_counter() - t)
t = time.perf_counter()
size = get("/bulk")
print(json.dumps({"latency": latency, "mbit": size * 8 / 1e6 / (time.perf_counter() - t)}))
"""


class World:
    """The namespace playing the server (10.197.N.0/30 to the host)."""

    def __init__(self, bulk_mb: int) -> None:
        self.name, n = f"stkb-{secrets.token_hex(3)}", secrets.randbelow(250) + 1
        self.veth, self.host_side, self.inside = f"stkb{self.name[-6:]}", f"10.197.{n}.1", f"10.197.{n}.2"
        self.bulk_mb = bulk_mb

    def __enter__(self) -> "World":
        ns = self.name
        for cmd in (f"ip netns add {ns}", f"ip link add {self.veth} type veth peer name pg0 netns {ns}",
                    f"ip addr add {self.host_side}/30 dev {self.veth}", f"ip link set {self.veth} up",
                    f"ip -n {ns} addr add {self.inside}/30 dev pg0", f"ip -n {ns} link set pg0 up",
                    f"ip -n {ns} link set lo up", f"ip -n {ns} addr add {ADDRESS}/32 dev lo"):
            subprocess.run(cmd.split(), check=True)
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER,
                                      ADDRESS, str(self.bulk_mb)], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["ip", "link", "del", self.veth], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--bulk-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tier", default="container")
    args = parser.parse_args()
    print(machine())
    results: dict[int, dict[str, list[float]]] = {p: {"latency": [], "mbit": []} for p in (80, 8080)}
    with World(args.bulk_mb) as world:
        os.environ.update({"STOCKADE_NET_UPLINK_NETNS": f"/run/netns/{world.name}",
                           "STOCKADE_NET_DNS": world.inside, "STOCKADE_POOL_SIZE": "0"})
        with PrivateDaemon():
            network = {"allow_out": ["bench.test"], "bandwidth_mbit": 100_000}
            with Sandbox.create(isolation=args.tier, network=network, timeout=900) as sb:  # type: ignore[arg-type]
                for _ in range(args.rounds):
                    for port in (8080, 80):
                        r = sb.commands.run(["python3", "-c", CLIENT, str(args.requests), str(port)],
                                            timeout=600)
                        assert r.exit_code == 0, r.stderr
                        out = json.loads(r.stdout)
                        results[port]["latency"] += out["latency"]
                        results[port]["mbit"].append(out["mbit"])
    direct, proxied = results[8080], results[80]
    lat_d, lat_p = (statistics.median(x["latency"]) * 1000 for x in (direct, proxied))
    mb_d, mb_p = (statistics.median(x["mbit"]) for x in (direct, proxied))
    n = args.requests * args.rounds
    table([("figure", "through the proxy (port 80)", "direct (port 8080)", "ratio"),
           (f"connect + request + response, n={n}", f"{lat_p:.2f} ms", f"{lat_d:.2f} ms",
            f"x{lat_p / lat_d:.2f} (+{lat_p - lat_d:.2f} ms)"),
           (f"{args.bulk_mb} MB download, n={args.rounds}", f"{mb_p:.0f} Mbit/s",
            f"{mb_d:.0f} Mbit/s", f"x{mb_p / mb_d:.2f}")])
    print(f"tier {args.tier}; bandwidth limit 100000 Mbit/s (so the proxy, not tc, is measured)")


if __name__ == "__main__":
    main()

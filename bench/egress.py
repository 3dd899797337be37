"""Issue 19 figure: request latency and throughput through the egress proxy vs. direct.

A sandbox allowed two names (``bench.test``, ``pass.test``, one address) talks to the same
servers in a namespace this script makes (the sandboxes' uplink, so nothing leaves the
machine). HTTP: port 80, which the firewall hands to the SNI/Host proxy, against port 8080,
which it forwards directly (the same resolved address is open at the IP level). HTTPS: port
8443 direct, port 443 through the proxy passed through unread (``pass.test``), and port 443
intercepted (``bench.test``, to which a secret is bound: the proxy terminates TLS, verifies the
server's certificate on its own connection and puts the secret in the ``Authorization``
header). Every case runs in each round, so drift hits all alike.

    .venv/bin/python -m bench.egress [--requests 200] [--bulk-mb 64] [--rounds 3] [--tier container]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from stockade import Sandbox, Secret

from ._common import PrivateDaemon, machine, table

ADDRESS = "203.0.113.80"
SERVER = r"""
import asyncio, ssl, sys
import dns.message, dns.rrset
ADDRESS, BULK, CERT, KEY = sys.argv[1], int(sys.argv[2]) << 20, sys.argv[3], sys.argv[4]

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
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CERT, KEY)
    for port in (443, 8443):
        await asyncio.start_server(http, "0.0.0.0", port, ssl=ctx)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""
CLIENT = r"""
import json, os, socket, ssl, sys, time
n, port, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
address = socket.gethostbyname(name)  # the proxy lets only resolved names through
tls = ssl.create_default_context() if port in (443, 8443) else None  # SSL_CERT_FILE
auth = os.environ.get("BENCH_KEY", "-")

def get(path):
    s = socket.create_connection((address, port), timeout=30)
    if tls:
        s = tls.wrap_socket(s, server_hostname=name)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nAuthorization: {auth}\r\n\r\n".encode())
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
        self.dir = Path(tempfile.mkdtemp(prefix="stockade-bench-world-", dir="/var/tmp"))
        self.cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=bench.test",
                "-keyout",
                str(key),
                "-out",
                str(self.cert),
                "-addext",
                "subjectAltName=DNS:bench.test,DNS:pass.test",
            ],
            check=True,
            capture_output=True,
        )
        self.cert.chmod(0o644)
        self.dir.chmod(0o755)
        ns = self.name
        for cmd in (
            f"ip netns add {ns}",
            f"ip link add {self.veth} type veth peer name pg0 netns {ns}",
            f"ip addr add {self.host_side}/30 dev {self.veth}",
            f"ip link set {self.veth} up",
            f"ip -n {ns} addr add {self.inside}/30 dev pg0",
            f"ip -n {ns} link set pg0 up",
            f"ip -n {ns} link set lo up",
            f"ip -n {ns} addr add {ADDRESS}/32 dev lo",
        ):
            subprocess.run(cmd.split(), check=True)
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                SERVER,
                ADDRESS,
                str(self.bulk_mb),
                str(self.cert),
                str(key),
            ],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()
        subprocess.run(["ip", "link", "del", self.veth], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


CASES = [
    ("http direct (8080)", 8080, "bench.test"),
    ("http via proxy (80)", 80, "bench.test"),
    ("https direct (8443)", 8443, "bench.test"),
    ("https via proxy, passed through (443)", 443, "pass.test"),
    ("https via proxy, intercepted + secret (443)", 443, "bench.test"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--bulk-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tier", default="container")
    args = parser.parse_args()
    print(machine())
    results: dict[str, dict[str, list[float]]] = {c[0]: {"latency": [], "mbit": []} for c in CASES}
    with World(args.bulk_mb) as world:
        os.environ.update(
            {
                "STOCKADE_NET_UPLINK_NETNS": f"/run/netns/{world.name}",
                "STOCKADE_NET_DNS": world.inside,
                "STOCKADE_POOL_SIZE": "0",
                "STOCKADE_CA_BUNDLE": str(world.cert),
            }
        )
        with PrivateDaemon():
            Secret.set("BENCH_KEY", "Bearer " + secrets.token_hex(24), hosts=["bench.test"])
            network = {"allow_out": ["bench.test", "pass.test"], "bandwidth_mbit": 100_000}
            with Sandbox.create(
                isolation=args.tier,
                network=network,
                timeout=900,  # type: ignore[arg-type]
                secrets=["BENCH_KEY"],
            ) as sb:
                for _ in range(args.rounds):
                    for label, port, name in CASES:
                        r = sb.commands.run(
                            ["python3", "-c", CLIENT, str(args.requests), str(port), name], timeout=600
                        )
                        assert r.exit_code == 0, r.stderr
                        out = json.loads(r.stdout)
                        results[label]["latency"] += out["latency"]
                        results[label]["mbit"].append(out["mbit"])
    n = args.requests * args.rounds
    rows = [
        (
            "case",
            f"connect + request + 2-byte response, median of {n}",
            f"{args.bulk_mb} MB download, median of {args.rounds}",
        )
    ]
    base = {"http": CASES[0][0], "https": CASES[2][0]}
    for label, _, _ in CASES:
        ref = results[base[label.split()[0]]]
        lat = statistics.median(results[label]["latency"]) * 1000
        lat0 = statistics.median(ref["latency"]) * 1000
        mb, mb0 = statistics.median(results[label]["mbit"]), statistics.median(ref["mbit"])
        rows.append(
            (
                label,
                f"{lat:.2f} ms (x{lat / lat0:.2f}, +{lat - lat0:.2f} ms)",
                f"{mb:.0f} Mbit/s (x{mb / mb0:.2f})",
            )
        )
    table(rows)
    print(
        f"tier {args.tier}; ratios against the direct case of the same protocol; bandwidth "
        f"limit 100000 Mbit/s (so the proxy, not tc, is measured)"
    )


if __name__ == "__main__":
    main()

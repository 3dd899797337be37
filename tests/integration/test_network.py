"""Networking: egress policies that really deny, on both tiers.

Only the pip tests use the machine's real uplink (which reaches nothing but the package
registries). Every test that checks that something is *denied* runs against a second daemon
whose sandbox uplink is a network namespace this module creates (the "playground"): it plays
the outside world (a DNS server, listeners on public, metadata and private addresses), so no
packet can leave the machine even if a rule under test is broken.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from stockade import ConflictError, InvalidRequestError, Sandbox
from stockade.engine.hostcheck import find_leaks
from stockade.net import find_net_leaks
from stockade.net.manager import engine_tag

from tests.conftest import TIERS, Daemon

pytestmark = pytest.mark.root

# -- the playground: a namespace playing the outside world ---------------------------------------
PUBLIC, NEIGHBOUR, WILD, OTHER = "203.0.113.10", "203.0.113.11", "203.0.113.12", "198.51.100.7"
METADATA = "169.254.169.254"
PLAYGROUND_SERVER = r"""
import asyncio, sys
import dns.message, dns.rcode, dns.rrset
names = dict(arg.split("=") for arg in sys.argv[1:])
BULK = 4 << 20

class Dns(asyncio.DatagramProtocol):
    def connection_made(self, transport): self.t = transport
    def datagram_received(self, data, addr):
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        name = q.question[0].name.to_text(omit_final_dot=True)
        if name in names and q.question[0].rdtype == 1:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 5, "IN", "A", names[name]))
        elif name not in names:
            r.set_rcode(dns.rcode.NXDOMAIN)
        self.t.sendto(r.to_wire(), addr)

async def hello(reader, writer):
    writer.write(f"hello {writer.get_extra_info('sockname')[0]}\n".encode())
    await writer.drain()
    try:
        await reader.read()  # hold the connection until the client closes it
    except ConnectionError:
        pass
    writer.close()

async def source(reader, writer):
    writer.write(bytes(BULK))
    await writer.drain()
    writer.close()

async def sink(reader, writer):
    writer.write(str(len(await reader.read())).encode())
    await writer.drain()
    writer.close()

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Dns, local_addr=("0.0.0.0", 53))
    await asyncio.start_server(source, "0.0.0.0", 8081)
    await asyncio.start_server(sink, "0.0.0.0", 8082)
    server = await asyncio.start_server(hello, "0.0.0.0", 8080)
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


class Playground:
    """A test-made namespace with a veth to the host: 10.199.N.1 (host) <-> 10.199.N.2."""

    def __init__(self) -> None:
        n = secrets.randbelow(250) + 1
        self.name = f"stkt-{secrets.token_hex(3)}"
        self.host_side, self.inside = f"10.199.{n}.1", f"10.199.{n}.2"
        self.veth = f"stkt{self.name[-6:]}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Playground":
        ns = self.name
        for cmd in (
            f"ip netns add {ns}",
            f"ip link add {self.veth} type veth peer name pg0 netns {ns}",
            f"ip addr add {self.host_side}/30 dev {self.veth}",
            f"ip link set {self.veth} up",
            f"ip -n {ns} addr add {self.inside}/30 dev pg0",
            f"ip -n {ns} link set pg0 up",
            f"ip -n {ns} link set lo up",
            *(f"ip -n {ns} addr add {a}/32 dev lo" for a in (PUBLIC, NEIGHBOUR, WILD, OTHER, METADATA)),
        ):
            subprocess.run(cmd.split(), check=True)
        names = {
            "allowed.test": PUBLIC,
            "neighbour.test": NEIGHBOUR,
            "a.wild.test": WILD,
            "wild.test": WILD,
            "metadata.test": METADATA,
            "inner.test": self.inside,
        }
        self.proc = subprocess.Popen(
            [
                # nsenter, not 'ip netns exec': that one makes a mount namespace too, whose
                # copies of the sandboxes' disks would keep them busy after their unmount.
                "nsenter",
                f"--net=/run/netns/{ns}",
                sys.executable,
                "-c",
                PLAYGROUND_SERVER,
                *(f"{k}={v}" for k, v in names.items()),
            ],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
        subprocess.run(["ip", "link", "del", self.veth], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False)


class HostListener:
    """A TCP listener of this test process on host addresses (must never answer a sandbox)."""

    def __init__(self, *addresses: str) -> None:
        self.sockets = []
        self.port = 0
        for address in addresses:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, self.port))
            self.port = s.getsockname()[1]
            s.listen(16)
            s.settimeout(0.2)
            self.sockets.append(s)
        self.accepted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for s in self.sockets:
                try:
                    conn, peer = s.accept()
                except OSError:
                    continue
                self.accepted.append(peer[0])
                conn.sendall(b"hello host\n")
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.sockets:
            s.close()


@pytest.fixture(scope="module")
def playground() -> Iterator[Playground]:
    pg = Playground()
    try:
        yield pg.start()
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def fake_daemon(playground: Playground, daemon: Daemon) -> Iterator[Daemon]:
    """A daemon whose sandboxes' egress goes into the playground (and its DNS comes from it)."""
    d = start_daemon(
        {"STOCKADE_NET_UPLINK_NETNS": f"/run/netns/{playground.name}", "STOCKADE_NET_DNS": playground.inside}
    )
    try:
        yield d
    finally:
        d.kill_sandboxes()
        d.stop()
        leaks = find_leaks(d.data_dir)
        subprocess.run(["rm", "-rf", str(d.data_dir)], check=False)
    assert not leaks, f"the playground daemon left things behind: {leaks}"


def start_daemon(env: dict[str, str], data_dir: Path | None = None) -> Daemon:
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="stockade-net-", dir="/var/tmp"))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Daemon(data_dir).start()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def make_played(fake_daemon: Daemon) -> Iterator[Callable[..., Sandbox]]:
    """Sandboxes on the playground daemon; killed and leak-checked at teardown."""
    made: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        kwargs.setdefault("timeout", 120)
        sb = Sandbox.create(data_dir=fake_daemon.data_dir, **kwargs)
        made.append(sb)
        return sb

    yield make
    leaks = []
    for sb in made:
        sb.kill()
        leaks += find_leaks(fake_daemon.data_dir, sb.id)
    assert not leaks, f"killed sandboxes left things behind: {leaks}"


# -- probes run inside a sandbox ---------------------------------------------------------------
PROBE = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4)
except OSError as e:
    print("FAIL", type(e).__name__, e)
else:
    s.settimeout(2)
    try:
        print("OK", s.recv(100).decode().strip())
    except socket.timeout:
        print("OK (silent)")
"""


def connect(sb: Sandbox, address: str, port: int = 8080) -> str:
    out = sb.commands.run(["python3", "-c", PROBE, address, str(port)], timeout=30).stdout
    assert out.startswith(("OK", "FAIL")), out
    return out.strip()


def resolve(sb: Sandbox, name: str) -> str | None:
    r = sb.commands.run(
        ["python3", "-c", "import socket, sys; print(socket.gethostbyname(sys.argv[1]))", name], timeout=30
    )
    return r.stdout.strip() if r.exit_code == 0 else None


def own_address(sb: Sandbox) -> str:
    r = sb.commands.run(
        [
            "python3",
            "-c",
            f"import socket; s = socket.socket(2, 2); s.connect(('{PUBLIC}', 9)); print(s.getsockname()[0])",
        ],
        check=True,
    )
    return r.stdout.strip()


def gateway(sb: Sandbox) -> str:
    return sb.files.read("/etc/resolv.conf").split()[1]


# -- the real registry (the machine's real uplink) ------------------------------------------------
REGISTRY = {"allow_out": ["pypi.org", "files.pythonhosted.org"]}
PIP = "pip install --break-system-packages --no-cache-dir --timeout 10 --retries 0 --target /tmp/six six"


@pytest.mark.slow
@pytest.mark.parametrize("tier", TIERS)
def test_pip_install_works_when_registry_names_are_allowed(
    make_sandbox: Callable[..., Sandbox], tier: str
) -> None:
    sb = make_sandbox(isolation=tier, network=REGISTRY)
    r = sb.commands.run(PIP, timeout=180)
    assert r.exit_code == 0, r.stderr
    r = sb.commands.run("PYTHONPATH=/tmp/six python3 -c 'import six; print(six.__version__)'")
    assert r.exit_code == 0 and r.stdout.strip()
    assert sb.get_info().network == {"allow_out": REGISTRY["allow_out"], "deny_out": []}


@pytest.mark.slow
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("network", ["none", {"allow_out": ["deb.debian.org"]}], ids=["none", "other-name"])
def test_pip_install_fails_without_the_registry(
    make_sandbox: Callable[..., Sandbox], tier: str, network: Any
) -> None:
    sb = make_sandbox(isolation=tier, network=network)
    r = sb.commands.run(PIP, timeout=180)
    assert r.exit_code != 0
    assert not sb.files.exists("/tmp/six/six.py")


# -- policies, played in the playground ----------------------------------------------------------
@pytest.mark.parametrize("tier", TIERS)
def test_names_hold_only_for_what_was_resolved(make_played: Callable[..., Sandbox], tier: str) -> None:
    sb = make_played(isolation=tier, network={"allow_out": ["allowed.test", "*.wild.test"]})
    # An allowed name's address is closed until the sandbox resolved it through us.
    assert connect(sb, PUBLIC).startswith("FAIL")
    assert resolve(sb, "allowed.test") == PUBLIC
    assert connect(sb, PUBLIC) == f"OK hello {PUBLIC}"
    # Its neighbour stays closed, by address and by name.
    assert connect(sb, NEIGHBOUR).startswith("FAIL")
    assert resolve(sb, "neighbour.test") is None
    # Wildcards cover subdomains, not the apex.
    assert resolve(sb, "a.wild.test") == WILD
    assert connect(sb, WILD) == f"OK hello {WILD}"
    assert resolve(sb, "wild.test") is None
    # DNS rebinding: an allowed name never opens an internal address.
    sb.set_network({"allow_out": ["metadata.test", "inner.test"]})
    assert resolve(sb, "metadata.test") is None and resolve(sb, "inner.test") is None


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize(
    "policy",
    [
        {"allow_out": ["0.0.0.0/0"]},
        {"allow_out": ["0.0.0.0/0", "allowed.test"], "deny_out": []},
        {"allow_out": []},
    ],
    ids=["all", "all+name", "empty"],
)
def test_host_metadata_and_private_addresses_are_always_denied(
    make_played: Callable[..., Sandbox], playground: Playground, tier: str, policy: dict[str, Any]
) -> None:
    sb = make_played(isolation=tier, network=policy)
    gw = gateway(sb)
    listener = HostListener("127.0.0.1", playground.host_side, gw)
    try:
        for address in ("127.0.0.1", gw, playground.host_side):  # the host itself
            assert connect(sb, address, listener.port).startswith("FAIL"), address
        assert connect(sb, METADATA).startswith("FAIL")
        assert connect(sb, playground.inside).startswith("FAIL")  # a private address
        assert listener.accepted == []
    finally:
        listener.close()
    # The same path does carry traffic where the policy allows it (the test can fail).
    expected = "FAIL" if not policy["allow_out"] else f"OK hello {PUBLIC}"
    assert connect(sb, PUBLIC).startswith(expected)


def test_private_ranges_open_only_to_an_explicit_cidr(
    make_played: Callable[..., Sandbox], playground: Playground
) -> None:
    sb = make_played(network={"allow_out": [f"{playground.inside}/32"]})
    assert connect(sb, playground.inside) == f"OK hello {playground.inside}"
    assert connect(sb, PUBLIC).startswith("FAIL")


def test_narrower_deny_carves_a_hole_and_allow_beats_deny(make_played: Callable[..., Sandbox]) -> None:
    sb = make_played(network={"allow_out": ["0.0.0.0/0"], "deny_out": ["203.0.113.0/24"]})
    assert connect(sb, PUBLIC).startswith("FAIL")
    assert connect(sb, OTHER) == f"OK hello {OTHER}"
    sb.set_network(
        {"allow_out": ["allowed.test", f"{OTHER}/32"], "deny_out": ["0.0.0.0/0", "203.0.113.0/24"]}
    )
    assert resolve(sb, "allowed.test") == PUBLIC
    assert connect(sb, PUBLIC) == f"OK hello {PUBLIC}"
    assert connect(sb, OTHER) == f"OK hello {OTHER}"
    assert connect(sb, NEIGHBOUR).startswith("FAIL")


@pytest.mark.parametrize("tier", TIERS)
def test_sandboxes_cannot_reach_each_other(make_played: Callable[..., Sandbox], tier: str) -> None:
    a = make_played(isolation=tier, network={"allow_out": ["0.0.0.0/0"]})
    b = make_played(isolation=tier, network={"allow_out": ["0.0.0.0/0"]})
    server = a.commands.run("python3 -m http.server 8000 >/dev/null 2>&1", background=True)
    address = own_address(a)
    for _ in range(50):  # wait until A really listens, as seen from A
        if connect(a, address, 8000).startswith("OK"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the listener in sandbox A never came up")
    assert connect(b, address, 8000).startswith("FAIL")
    assert connect(b, PUBLIC) == f"OK hello {PUBLIC}"
    server.kill()


@pytest.mark.parametrize("tier", TIERS)
def test_policy_changes_apply_to_new_connections(
    make_played: Callable[..., Sandbox], fake_daemon: Daemon, tier: str
) -> None:
    sb = make_played(isolation=tier, network={"allow_out": []})
    assert connect(sb, PUBLIC).startswith("FAIL")
    sb.set_network({"allow_out": [f"{PUBLIC}/32"]})
    assert connect(sb, PUBLIC) == f"OK hello {PUBLIC}"
    again = Sandbox.connect(sb.id, data_dir=fake_daemon.data_dir)
    assert again.info.network == {"allow_out": [f"{PUBLIC}/32"], "deny_out": []}
    again.close()
    sb.set_network({"allow_out": []})
    assert connect(sb, PUBLIC).startswith("FAIL")


def test_network_none_is_loopback_only_and_final(make_played: Callable[..., Sandbox]) -> None:
    sb = make_played()
    assert sb.info.network == "none"
    devices = sb.files.read("/proc/net/dev").splitlines()[2:]
    assert [line.split(":")[0].strip() for line in devices] == ["lo"]
    assert connect(sb, PUBLIC).startswith("FAIL")
    with pytest.raises(ConflictError):
        sb.set_network({"allow_out": ["0.0.0.0/0"]})


def test_connection_count_is_limited(make_played: Callable[..., Sandbox]) -> None:
    sb = make_played(network={"allow_out": [f"{PUBLIC}/32"], "max_connections": 4})
    script = (
        "import socket\nheld, ok = [], 0\nfor _ in range(8):\n"
        "    try:\n        held.append(socket.create_connection(('%s', 8080), timeout=3))\n"
        "        ok += 1\n    except OSError:\n        pass\nprint(ok)\n" % PUBLIC
    )
    assert sb.commands.run(["python3", "-c", script], timeout=60).stdout.strip() == "4"


BULK_TRANSFER = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
started, size = time.monotonic(), 0
if sys.argv[2] == "8082":
    s.sendall(bytes(4 << 20))
    s.shutdown(socket.SHUT_WR)
    size = int(s.recv(100))
else:
    while chunk := s.recv(1 << 16):
        size += len(chunk)
print(size, time.monotonic() - started)
"""


@pytest.mark.slow
@pytest.mark.parametrize("tier", TIERS)
def test_bandwidth_is_limited_both_ways(make_played: Callable[..., Sandbox], tier: str) -> None:
    sb = make_played(isolation=tier, network={"allow_out": [f"{PUBLIC}/32"], "bandwidth_mbit": 8})
    for port in (8081, 8082):  # download, upload
        out = sb.commands.run(["python3", "-c", BULK_TRANSFER, PUBLIC, str(port)], timeout=120)
        assert out.exit_code == 0, f"port {port}: {out.stderr}"
        size, seconds = out.stdout.split()
        assert int(size) == 4 << 20
        # 32 Mbit at 8 Mbit/s is 4 s; a 256 kB burst may shave a little off, never half.
        assert float(seconds) > 2.5, f"port {port}: {size} bytes in {seconds} s"


@pytest.mark.parametrize(
    "network",
    [
        {"allow_out": ["127.0.0.1/32"]},
        {"allow_out": ["169.254.169.254/32"]},
        {"deny_out": ["example.com"]},
        {"allow_out": ["not a name"]},
    ],
)
def test_impossible_policies_are_refused(
    make_played: Callable[..., Sandbox], network: dict[str, Any]
) -> None:
    with pytest.raises(InvalidRequestError):
        make_played(network=network)


# -- clean-up ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fifty_networked_sandboxes_leave_nothing(
    make_played: Callable[..., Sandbox], fake_daemon: Daemon
) -> None:
    ids = []
    for _ in range(50):
        sb = Sandbox.create(
            data_dir=fake_daemon.data_dir, network={"allow_out": ["allowed.test"]}, timeout=120
        )
        ids.append(sb.id)
        sb.kill()
    leaks = [leak for sid in ids for leak in find_leaks(fake_daemon.data_dir, sid)]
    assert leaks == []
    tag = engine_tag(fake_daemon.data_dir)
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"stockade-{tag}-")]
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(f"sv{tag}")]


@pytest.mark.slow
def test_engine_killed_mid_create_leaves_nothing(playground: Playground, daemon: Daemon) -> None:
    env = {
        "STOCKADE_NET_UPLINK_NETNS": f"/run/netns/{playground.name}",
        "STOCKADE_NET_DNS": playground.inside,
        "STOCKADE_POOL_SIZE": "0",
    }
    d = start_daemon(env)
    tag = engine_tag(d.data_dir)
    try:
        creating = threading.Thread(target=_create_ignoring_errors, args=(d.data_dir,), daemon=True)
        creating.start()
        deadline = time.monotonic() + 30
        while not [n for n in os.listdir("/run/netns") if n.startswith(f"stockade-{tag}-")]:
            assert time.monotonic() < deadline, "the create never made its namespace"
            time.sleep(0.005)
        d.stop(signal.SIGKILL)
        creating.join(60)
        assert find_net_leaks(d.data_dir), "nothing to clean up: the test did not test anything"
        d = start_daemon(env, d.data_dir)  # recovery runs when the engine opens
        d.stop()
        assert find_leaks(d.data_dir) == []
    finally:
        d.stop(signal.SIGKILL)
        _sweep(d.data_dir)


def _sweep(data_dir: Path) -> None:
    """After a failed test: what a next engine would do (its data directory is about to go)."""
    if find_leaks(data_dir):
        d = start_daemon({"STOCKADE_POOL_SIZE": "0"}, data_dir)
        d.kill_sandboxes()
        d.stop()
    subprocess.run(["rm", "-rf", str(data_dir)], check=False)


def _create_ignoring_errors(data_dir: Path) -> None:
    try:
        Sandbox.create(data_dir=data_dir, network={"allow_out": []}, timeout=60)
    except Exception:  # noqa: BLE001 - the daemon is killed under it on purpose
        pass


@pytest.mark.slow
def test_restarted_engine_keeps_live_sandboxes_policies(playground: Playground, daemon: Daemon) -> None:
    env = {
        "STOCKADE_NET_UPLINK_NETNS": f"/run/netns/{playground.name}",
        "STOCKADE_NET_DNS": playground.inside,
        "STOCKADE_POOL_SIZE": "0",
    }
    d = start_daemon(env)
    try:
        sb = Sandbox.create(data_dir=d.data_dir, network={"allow_out": [f"{PUBLIC}/32"]}, timeout=120)
        assert connect(sb, PUBLIC) == f"OK hello {PUBLIC}"
        sb.close()
        d.stop()  # the sandbox keeps running; the engine's rules and resolver are rebuilt
        d = start_daemon(env, d.data_dir)
        sb = Sandbox.connect(sb.id, data_dir=d.data_dir)
        assert sb.info.network == {"allow_out": [f"{PUBLIC}/32"], "deny_out": []}
        assert connect(sb, PUBLIC) == f"OK hello {PUBLIC}"
        assert connect(sb, NEIGHBOUR).startswith("FAIL")
        sb.set_network({"allow_out": ["allowed.test"]})
        assert connect(sb, PUBLIC).startswith("FAIL")
        assert resolve(sb, "allowed.test") == PUBLIC
        assert connect(sb, PUBLIC) == f"OK hello {PUBLIC}"
        sb.kill()
        d.stop()
        assert find_leaks(d.data_dir) == []
    finally:
        d.stop(signal.SIGKILL)
        _sweep(d.data_dir)

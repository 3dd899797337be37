"""MicroVM networking and volumes: a tap bridged into the sandbox's namespace, 9p volumes.

Two microVMs for the whole module (TCG boots are slow), both on a daemon whose sandbox uplink is
a namespace this module creates (test_network.py's playground), so no packet can leave the
machine even if a rule under test is broken:

* ``net_vm``: an egress policy (paused and resumed, which keeps its network);
* ``vol_vm``: ``network="none"``, a read-write volume at /data and a read-only one at /ro (killed
  by a test that then reads what it wrote from a container sandbox).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest

from stockade import ConflictError, Sandbox, Volume
from stockade.engine.hostcheck import find_leaks
from stockade import host
from tests.conftest import Daemon
from tests.integration.test_network import (
    METADATA,
    NEIGHBOUR,
    PUBLIC,
    HostListener,
    Playground,
    connect,
    gateway,
    own_address,
    resolve,
    start_daemon,
)

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]
BOOT = 600.0  # request timeout for a create: TCG boots on a loaded 2-core machine are slow
POLICY = {"allow_out": ["allowed.test"]}


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Playground, Daemon]]:
    """The playground namespace and a daemon whose sandbox egress goes into it."""
    pg = Playground().start()
    d = None
    try:
        d = start_daemon(
            {
                "STOCKADE_NET_UPLINK_NETNS": f"/run/netns/{pg.name}",
                "STOCKADE_NET_DNS": pg.inside,
                "STOCKADE_POOL_SIZE": "0",
            }
        )
        yield pg, d
    finally:
        leaks: list[Any] = []
        if d is not None:
            d.kill_sandboxes()
            with d.client() as c:
                for v in c.get("/volumes").json()["items"]:
                    c.delete(f"/volumes/{v['name']}")
            d.stop()
            leaks = find_leaks(d.data_dir)
            subprocess.run(["rm", "-rf", str(d.data_dir)], check=False)
        pg.stop()
    assert not leaks, f"the microVM daemon left things behind: {leaks}"


class Vols(NamedTuple):
    """The module's two volumes: names and the host directories they are mounted on."""

    rw_name: str
    ro_name: str
    rw: Path
    ro: Path


@pytest.fixture(scope="module")
def volumes(world: tuple[Playground, Daemon]) -> Vols:
    _, d = world
    names = [
        Volume.create(f"mv-{role}-{secrets.token_hex(3)}", size_mb=32, data_dir=d.data_dir).name
        for role in ("rw", "ro")
    ]
    vols = Vols(*names, *(d.data_dir / "volumes" / n / "mnt" for n in names))
    (vols.ro / "kept.txt").write_text("host original\n")
    return vols


def _vm(d: Daemon, **kwargs: Any) -> Iterator[Sandbox]:
    sb = Sandbox.create(
        isolation="microvm", timeout=1800, request_timeout=BOOT, data_dir=d.data_dir, **kwargs
    )
    yield sb
    sb.kill()
    sb.close()
    assert not find_leaks(d.data_dir, sb.id)


@pytest.fixture(scope="module")
def net_vm(world: tuple[Playground, Daemon]) -> Iterator[Sandbox]:
    yield from _vm(world[1], network=POLICY)


@pytest.fixture(scope="module")
def vol_vm(world: tuple[Playground, Daemon], volumes: Vols) -> Iterator[Sandbox]:
    yield from _vm(
        world[1], volumes={"/data": volumes.rw_name, "/ro": {"volume": volumes.ro_name, "read_only": True}}
    )


# -- networking ----------------------------------------------------------------------------------
def test_guest_takes_the_sandbox_address_and_the_policy_holds(
    net_vm: Sandbox, world: tuple[Playground, Daemon]
) -> None:
    playground, d = world
    state = json.loads((d.data_dir / "net" / "sandboxes" / f"{net_vm.id}.json").read_text())
    assert own_address(net_vm) == state["address"]  # the address the host's rules are about
    # Closed until resolved through the engine's resolver, then open; the rest stays closed.
    assert connect(net_vm, PUBLIC).startswith("FAIL")
    assert resolve(net_vm, "allowed.test") == PUBLIC
    assert connect(net_vm, PUBLIC) == f"OK hello {PUBLIC}"
    assert resolve(net_vm, "neighbour.test") is None
    assert connect(net_vm, NEIGHBOUR).startswith("FAIL")
    assert connect(net_vm, METADATA).startswith("FAIL")
    gw = gateway(net_vm)
    listener = HostListener("127.0.0.1", playground.host_side, gw)
    try:
        for host_address in ("127.0.0.1", gw, playground.host_side):
            assert connect(net_vm, host_address, listener.port).startswith("FAIL"), host_address
        assert listener.accepted == []
    finally:
        listener.close()


def test_resolver_and_ca_bundle_are_the_hosts_read_only(net_vm: Sandbox) -> None:
    bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_bytes()
    r = net_vm.commands.run(
        "sha256sum /etc/ssl/certs/ca-certificates.crt; echo x >> /etc/resolv.conf", user="root"
    )
    assert r.stdout.split()[0] == hashlib.sha256(bundle).hexdigest()
    assert r.exit_code != 0 and "Read-only" in r.stderr
    envs = net_vm.commands.run("echo $SSL_CERT_FILE").stdout.strip()
    assert envs == "/etc/ssl/certs/ca-certificates.crt"


def test_network_none_is_loopback_only(vol_vm: Sandbox) -> None:
    devices = vol_vm.files.read("/proc/net/dev").splitlines()[2:]
    assert [line.split(":")[0].strip() for line in devices] == ["lo"]
    assert connect(vol_vm, PUBLIC).startswith("FAIL")


def _qemu(d: Daemon, sb: Sandbox) -> int:
    pids = [
        p
        for p in host.cgroup_pids(f"{host.cgroup_parent(d.data_dir)}/{sb.id}")
        if "qemu" in Path(f"/proc/{p}/comm").read_text()
    ]
    assert len(pids) == 1, pids
    return pids[0]


def test_qemu_stays_jailed_with_a_network_and_volumes(
    net_vm: Sandbox, vol_vm: Sandbox, world: tuple[Playground, Daemon]
) -> None:
    _, d = world
    for sb in (net_vm, vol_vm):
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{_qemu(d, sb)}/status").read_text().splitlines()
        )
        assert "0" not in status["Uid"].split() and int(status["CapEff"], 16) == 0
        assert status["Seccomp"].strip() == "2"
    # The networked QEMU is in its sandbox's namespace (it holds the tap), nowhere else.
    netns = next(Path("/run/netns").glob(f"stockade-*-{net_vm.id}"))
    assert os.stat(f"/proc/{_qemu(d, net_vm)}/ns/net").st_ino == netns.stat().st_ino
    # With volumes: a /proc of its own process only, and the read-only volume bound read-only.
    pid = _qemu(d, vol_vm)
    names = {p.name for p in Path(f"/proc/{pid}/root/proc").iterdir()}
    assert "1" in names and names <= {"1", "self", "thread-self"}, names
    mounts = {
        line.split()[4]: line.split()[5] for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    }
    assert "ro" in mounts["/volumes/1"].split(",") and "rw" in mounts["/volumes/0"].split(",")


# -- volumes -------------------------------------------------------------------------------------
REMOUNT = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs("/tmp/m", exist_ok=True)
if libc.umount2(b"/ro", 0) or libc.mount(sys.argv[1].encode(), b"/tmp/m", b"9p", 0,
                                         b"trans=virtio,version=9p2000.L"):
    sys.exit(os.strerror(ctypes.get_errno()))
"""


def test_read_only_volume_refuses_writes_even_to_guest_root(vol_vm: Sandbox, volumes: Vols) -> None:
    assert vol_vm.files.read("/ro/kept.txt") == "host original\n"
    r = vol_vm.commands.run("echo changed > /ro/kept.txt")
    assert r.exit_code != 0 and "Read-only" in r.stderr
    # Guest root mounts the export again, read-write: QEMU's export and the jail's bind refuse.
    tag = next(
        line.split()[0] for line in vol_vm.files.read("/proc/mounts").splitlines() if line.split()[1] == "/ro"
    )
    r = vol_vm.commands.run(["python3", "-c", REMOUNT, tag], user="root")
    r = vol_vm.commands.run(
        f"{'echo remounted' if r.exit_code == 0 else 'false'} && cd /tmp/m && "
        f"(echo changed > kept.txt; touch new.txt; rm -f kept.txt; cat kept.txt)",
        user="root",
    )
    assert "remounted" in r.stdout, r.stderr
    assert r.stdout.endswith("host original\n") and "Read-only" in r.stderr, (r.stdout, r.stderr)
    assert (volumes.ro / "kept.txt").read_text() == "host original\n"
    assert sorted(p.name for p in volumes.ro.iterdir()) == ["kept.txt", "lost+found"]


def test_guest_cannot_leave_the_volume(vol_vm: Sandbox, volumes: Vols) -> None:
    secret_dir = Path(tempfile.mkdtemp(prefix="stockade-host-secret-", dir="/var/tmp"))
    try:
        (secret_dir / "secret").write_text("host only")
        mnt = volumes.rw
        os.symlink(secret_dir / "secret", mnt / "abs-link")
        os.symlink(os.path.relpath(secret_dir / "secret", mnt), mnt / "rel-link")
        os.symlink("/etc", mnt / "etc-link")
        os.symlink(os.path.relpath("/", mnt), mnt / "up-link")
        r = vol_vm.commands.run(
            "echo guest-side > /etc/stockade-marker; ln -s /etc /data/guest-link; "
            "cat /data/abs-link /data/rel-link /data/etc-link/passwd; "
            "cat /data/guest-link/stockade-marker; "
            f"ls /data/up-link{secret_dir}; cat /data/../../../../..{secret_dir}/secret; "
            "ls -a /data/..",
            user="root",
        )
        assert "host only" not in r.stdout
        assert "root:x:0:0" not in r.stdout  # host-made links are not followed at all
        # A link the guest makes resolves in the guest and is a plain file on the host, so no
        # container sandbox of the volume follows it either.
        assert "guest-side" in r.stdout
        assert not (volumes.rw / "guest-link").is_symlink()
        assert ".stockade" in r.stdout  # /data/.. is the guest's own root
        mounts = vol_vm.commands.run("cat /proc/mounts").stdout
        for line in mounts.splitlines():
            source, target, fstype = line.split()[:3]
            if fstype == "9p" and target != "/tmp/m":  # (not the read-only test's own mount)
                assert source.startswith("stockade."), line
                options = line.split()[3].split(",")
                assert "nosuid" in options and "nodev" in options, line
    finally:
        subprocess.run(["rm", "-rf", str(secret_dir)], check=True)
        for name in ("abs-link", "rel-link", "etc-link", "up-link", "guest-link"):
            (volumes.rw / name).unlink(missing_ok=True)


def test_files_cross_between_microvm_and_container(
    vol_vm: Sandbox, world: tuple[Playground, Daemon], volumes: Vols
) -> None:
    _, d = world
    # The guest sees its own owners and modes, and its writer may rewrite what it made.
    vol_vm.commands.run("mkdir -p /data/dir && echo from-vm > /data/dir/vm.txt", check=True)
    assert vol_vm.commands.run("stat -c %U:%a /data/dir/vm.txt").stdout.strip() == "user:644"
    vol_vm.commands.run("echo again >> /data/dir/vm.txt", check=True)
    # A container sandbox reads what the microVM wrote, and the microVM (at once: cache=none)
    # what the container writes.
    box = Sandbox.create(
        isolation="container", timeout=120, data_dir=d.data_dir, volumes={"/v": volumes.rw_name}
    )
    try:
        assert box.files.read("/v/dir/vm.txt") == "from-vm\nagain\n"
        box.files.write("/v/box.txt", "from-container")
        assert vol_vm.files.read("/data/box.txt") == "from-container"
    finally:
        box.kill()
    assert not find_leaks(d.data_dir, box.id)


def test_volume_written_by_a_killed_microvm_is_read_by_a_container(
    vol_vm: Sandbox, world: tuple[Playground, Daemon], volumes: Vols
) -> None:
    _, d = world
    data = os.urandom(1 << 20)
    vol_vm.files.write("/data/blob.bin", data)
    vol_vm.commands.run("sync", check=True)
    vol_vm.kill()
    assert not find_leaks(d.data_dir, vol_vm.id)
    box = Sandbox.create(
        isolation="container",
        timeout=120,
        data_dir=d.data_dir,
        volumes={"/in": {"volume": volumes.rw_name, "read_only": True}},
    )
    try:
        assert box.files.read("/in/blob.bin", format="bytes") == data
    finally:
        box.kill()
    assert not find_leaks(d.data_dir, box.id)


def test_networked_microvm_pauses_and_keeps_its_network(
    net_vm: Sandbox, world: tuple[Playground, Daemon]
) -> None:
    address = own_address(net_vm)
    net_vm.pause()
    assert net_vm.get_info().state == "paused"
    again = Sandbox.connect(net_vm.id, data_dir=world[1].data_dir)
    try:
        assert own_address(again) == address
        assert resolve(again, "allowed.test") == PUBLIC
        assert connect(again, PUBLIC) == f"OK hello {PUBLIC}"
        assert connect(again, NEIGHBOUR).startswith("FAIL")
    finally:
        again.close()


SPOOF = r"""
import socket, sys
s = socket.socket()
s.settimeout(4)
s.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND: any source address, even one not ours
s.bind((sys.argv[1], 0))
try:
    s.connect((sys.argv[2], 8080))
    print("OK", s.recv(100).decode().strip())
except OSError as e:
    print("FAIL", e)
"""


def test_guest_root_cannot_send_from_another_address(net_vm: Sandbox) -> None:
    """Spoofing from inside the guest meets the host's (veth, address) check."""
    assert resolve(net_vm, "allowed.test") == PUBLIC
    own = own_address(net_vm)

    def run(source: str) -> str:
        return net_vm.commands.run(["python3", "-c", SPOOF, source, PUBLIC], user="root", timeout=30).stdout

    assert run(own) == f"OK hello {PUBLIC}\n"  # the probe works from the real address
    neighbour = own.rsplit(".", 1)[0] + "." + str((int(own.rsplit(".", 1)[1]) + 1) % 250 + 2)
    for source in (neighbour, "10.0.0.1", PUBLIC):
        assert run(source).startswith("FAIL"), source

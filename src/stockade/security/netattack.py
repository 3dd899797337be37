"""Network attacks: run from inside a sandbox with an egress policy, judged from outside.

The attacker's policy allows one played destination (``allowed.test`` and its subdomains);
a victim sandbox on the same host listens on a port. Each attack in
``tests/security/attacks/net/`` tries one way out (a denied address, the host's addresses, the
metadata address, a foreign resolver, DNS rebinding, IPv6, forged source addresses, ARP
spoofing, the victim) and prints a verdict; the host then counts what actually arrived: the
playground's log (:mod:`.netplay`), a listener on every host address, the victim's log, the
host's neighbour table. Anything that arrived where the policy says no is ``succeeded``.
A control attack first proves the allowed path carries traffic, so every denial can fail.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, cast

from .. import ApiError, Sandbox, StockadeError
from ..models import Isolation
from .corpus import LIBRARY, Attack, default_corpus_dir, parse
from .netplay import ALLOWED, DENIED, FOREIGN_RESOLVER, METADATA, TCP_PORT, UDP_PORT, Playground
from .runner import OWN_KERNEL, AttackResult, _host_boot_id, _verdict, settled_leaks

REMOTE_DIR = "/tmp/netattacks"
HELPER = "_net.py"
POLICY = {"allow_out": ["allowed.test", "*.allowed.test"]}
VICTIM_PORT = 7000
VICTIM_LISTENER = r"""
import socket, threading
def log(line):
    with open("/tmp/hits", "a") as f:
        f.write(line + "\n")
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", PORT)); s.listen(16)
    while True:
        c, peer = s.accept(); log(f"tcp {peer[0]}"); c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", PORT))
open("/tmp/hits", "a").close()
while True:
    data, peer = u.recvfrom(512); log(f"udp {peer[0]} {data[:80]!r}")
""".replace("PORT", str(VICTIM_PORT))


class NetworkRefused(Exception):
    """The tier refuses sandboxes with a network policy (the microVM tier, for now)."""


def net_corpus(directory: Path | None = None) -> list[Attack]:
    """The network attacks, control first."""
    directory = directory or default_corpus_dir() / "net"
    attacks = [parse(p) for p in sorted(directory.glob("*.py")) if not p.name.startswith("_")]
    return sorted(attacks, key=lambda a: a.name != "control")


class HostListener:
    """TCP and UDP on every host address (0.0.0.0 and ::) at one port; records the senders."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.sockets: list[socket.socket] = []
        tcp4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp4.bind(("0.0.0.0", 0))
        self.port = tcp4.getsockname()[1]
        for family, kind in (
            (socket.AF_INET6, socket.SOCK_STREAM),
            (socket.AF_INET, socket.SOCK_DGRAM),
            (socket.AF_INET6, socket.SOCK_DGRAM),
        ):
            s = socket.socket(family, kind)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", self.port))
            self.sockets.append(s)
        self.sockets.insert(0, tcp4)
        for s in self.sockets:
            if s.type == socket.SOCK_STREAM:
                s.listen(16)
            s.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for s in self.sockets:
                try:
                    if s.type == socket.SOCK_STREAM:
                        conn, peer = s.accept()
                        conn.close()
                        self.hits.append(f"tcp from {peer[0]}")
                    else:
                        data, peer = s.recvfrom(512)
                        self.hits.append(f"udp from {peer[0]}: {data[:60]!r}")
                except OSError:
                    continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in self.sockets:
            s.close()


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=30).stdout
    found: list[dict[str, Any]] = json.loads(out or "[]")
    return found


def host_addresses() -> list[str]:
    """Every IPv4 address of the host's own network namespace."""
    return sorted({a["local"] for link in _ip_json("-4", "addr") for a in link.get("addr_info", [])})


def _attachment(data_dir: Path, sandbox_id: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((data_dir / "net" / "sandboxes" / f"{sandbox_id}.json").read_text())
    return found


def _link_local(dev: str) -> str:
    for link in _ip_json("-6", "addr", "show", "dev", dev):
        for a in link.get("addr_info", []):
            if a.get("scope") == "link":
                return str(a["local"])
    return ""


def _neighbours(address: str) -> list[str]:
    """Host neighbour entries for ``address`` (device and link-layer address)."""
    return [f"{n.get('dev')} {n.get('lladdr', '-')}" for n in _ip_json("neigh", "show", "to", address)]


class NetRun:
    """One tier's network attacks against the daemon of ``data_dir`` (whose uplink is ``pg``)."""

    def __init__(self, tier: str, data_dir: Path, pg: Playground, attacks: list[Attack]) -> None:
        self.tier, self.data_dir, self.pg, self.attacks = tier, data_dir, pg, attacks
        self.token = secrets.token_hex(4)

    def _upload(self, sb: Sandbox) -> None:
        corpus = self.attacks[0].path.parent
        for path in (corpus.parent / LIBRARY, corpus / HELPER, *(a.path for a in self.attacks)):
            sb.files.write(f"{REMOTE_DIR}/{path.name}", path.read_bytes())

    def run(self) -> list[AttackResult]:
        try:
            victim = Sandbox.create(
                isolation=cast(Isolation, self.tier),
                timeout=600,
                network={"allow_out": []},
                data_dir=self.data_dir,
            )
        except ApiError as exc:
            if exc.status >= 500:
                raise
            raise NetworkRefused(f"the {self.tier} tier refused a networked sandbox: {exc}") from None
        attacker: Sandbox | None = None
        listener = HostListener()
        serving = None
        try:
            victim.files.write("/tmp/listener.py", VICTIM_LISTENER)
            serving = victim.commands.run(
                ["python3", "/tmp/listener.py"], background=True, user="root", timeout=600
            )
            attacker = Sandbox.create(
                isolation=cast(Isolation, self.tier), timeout=600, network=POLICY, data_dir=self.data_dir
            )
            self._upload(attacker)
            env = self._env(attacker, victim, listener)
            results = [
                self._one(attacker, victim, listener, attack, user, env)
                for attack in self.attacks
                for user in attack.users
            ]
        finally:
            listener.close()
            if serving is not None:
                serving.kill()
            for sb in (attacker, victim):
                if sb is not None:
                    sb.kill()
        leaks = [
            leak
            for sb in (attacker, victim)
            if sb is not None
            for leak in settled_leaks(self.data_dir, sb.id)
        ]
        results.append(
            AttackResult(
                self.tier,
                "net_cleanup",
                "-",
                "succeeded" if leaks else "contained",
                f"left on the host: {leaks}" if leaks else "nothing left",
                0.0,
            )
        )
        return results

    def _env(self, attacker: Sandbox, victim: Sandbox, listener: HostListener) -> dict[str, str]:
        mine, theirs = _attachment(self.data_dir, attacker.id), _attachment(self.data_dir, victim.id)
        self.victim_address, self.victim_veth = theirs["address"], theirs["veth"]
        self.victim_neighbours = _neighbours(self.victim_address)
        gateway = attacker.files.read("/etc/resolv.conf").split()[1]
        return {
            "NET_TOKEN": self.token,
            "NET_TCP_PORT": str(TCP_PORT),
            "NET_UDP_PORT": str(UDP_PORT),
            "NET_ALLOWED": ALLOWED,
            "NET_DENIED": DENIED,
            "NET_METADATA": METADATA,
            "NET_FOREIGN_RESOLVER": FOREIGN_RESOLVER,
            "NET_PRIVATE": self.pg.inside,
            "NET_PLAYGROUND_HOST": self.pg.host_side,
            "NET_GATEWAY": gateway,
            "NET_HOST_ADDRESSES": ",".join(host_addresses()),
            "NET_HOST_PORT": str(listener.port),
            "NET_HOST_LINKLOCAL": _link_local(mine["veth"]),
            "NET_VICTIM": self.victim_address,
            "NET_VICTIM_PORT": str(VICTIM_PORT),
            "STOCKADE_HOST_BOOT_ID": _host_boot_id(),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _one(
        self,
        sb: Sandbox,
        victim: Sandbox,
        listener: HostListener,
        attack: Attack,
        user: str,
        env: dict[str, str],
    ) -> AttackResult:
        start = time.monotonic()
        name = f"net_{attack.name}"
        result = AttackResult(self.tier, name, user, "error", "", 0.0)
        seen_before, host_before = len(self.pg.events), len(listener.hits)
        try:
            run = sb.commands.run(
                ["python3", f"{REMOTE_DIR}/{attack.filename}"],
                user=user,
                envs=env,
                cwd=REMOTE_DIR,
                timeout=90,
            )
            verdict = _verdict(run.stdout)
            if verdict is None:
                result.detail = f"no verdict; stdout {run.stdout[-300:]!r} stderr {run.stderr[-500:]!r}"
            else:
                result.outcome = str(verdict["outcome"])
                result.detail = json.dumps(verdict.get("detail"))[:700]
                detail = verdict.get("detail")
                if (
                    isinstance(detail, dict)
                    and detail.get("kernel") == "the sandbox's own"
                    and self.tier not in OWN_KERNEL
                ):
                    result.outcome = "succeeded"  # the host's kernel is nobody's own
        except StockadeError as exc:
            result.detail = f"could not run: {type(exc).__name__}: {exc}"
        time.sleep(0.5)  # let the last datagrams land
        events = self.pg.events[seen_before:]
        arrived = self._arrived(attack, events, listener.hits[host_before:], victim)
        if attack.name == "control":
            ok = any(e.get("kind") == "tcp" and e.get("dst") == ALLOWED for e in events) and any(
                "legit" in e.get("payload", "") for e in events
            )
            if result.outcome != "contained" or not ok:
                result.outcome = "error"
                result.detail = (
                    f"the allowed path carries no traffic, so no denial below "
                    f"proves anything: {result.detail}; arrived: {arrived}"
                )
        elif arrived:
            result.outcome = "succeeded"
            result.detail = f"arrived where the policy says no: {arrived[:6]}; {result.detail}"
        result.seconds = time.monotonic() - start
        return result

    def _arrived(
        self, attack: Attack, events: list[dict[str, Any]], host_hits: list[str], victim: Sandbox
    ) -> list[Any]:
        """What reached a place the policy closes, during one attack."""
        bad: list[Any] = [f"host listener: {h}" for h in host_hits]
        for e in events:
            kind = e.get("kind")
            if kind == "tcp" and (e.get("dst") != ALLOWED or attack.name != "control"):
                bad.append(e)
            elif kind == "udp" and self.token in e.get("payload", "") and attack.name != "control":
                bad.append(e)
            elif kind in ("dns", "dns-garbage") and self.token in e.get("name", ""):
                bad.append(e)
        try:
            hits = victim.files.read("/tmp/hits").split("\n")
        except StockadeError as exc:
            hits = [f"the victim's log is unreadable: {exc}"]
        bad += [f"victim: {h}" for h in hits if h]
        if attack.name == "neighbour_spoof":
            now = _neighbours(self.victim_address)
            if [n for n in now if not n.startswith(self.victim_veth)]:
                bad.append(
                    f"host neighbour table for {self.victim_address}: {self.victim_neighbours} -> {now}"
                )
        return bad


def run_network(
    tier: str, data_dir: Path, pg: Playground, attacks: list[Attack] | None = None
) -> list[AttackResult]:
    """Run the network attacks on ``tier`` against a daemon started with ``pg.env()``;
    :class:`NetworkRefused` if the tier cannot have a network."""
    return NetRun(tier, data_dir, pg, attacks or net_corpus()).run()

"""Egress policies: what a caller may ask for, validated, and compiled to address ranges.

A policy is ``allow_out`` (CIDRs, host names, ``*.wildcards``) and ``deny_out`` (CIDRs).
Everything else is denied. Rules are resolved the way E2B users expect:

* an allowed **name** always wins: the addresses the resolver returned for it are let through
  even inside a denied CIDR;
* between CIDRs the **most specific** rule wins, and **allow beats deny** at equal length, so
  ``deny 0.0.0.0/0 + allow 1.2.3.4/32`` lets 1.2.3.4 through and ``allow 0.0.0.0/0 + deny
  203.0.113.0/24`` carves that /24 out;
* :data:`ALWAYS_DENIED` can never be allowed, and :data:`PRIVATE` ranges only by a CIDR that
  lies inside them (``0.0.0.0/0`` does not open ``10.0.0.0/8``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Iterable

Net = ipaddress.IPv4Network

#: Never reachable from a sandbox, whatever the policy (the host, link-local incl. the cloud
#: metadata address 169.254.169.254, multicast, reserved). Sandbox and host addresses are
#: added per engine (see :class:`stockade.net.manager.NetworkManager`).
ALWAYS_DENIED: tuple[Net, ...] = tuple(
    Net(n)
    for n in (
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "192.0.0.0/24",
        "255.255.255.255/32",
    )
)
#: Reachable only through an allow CIDR inside them.
PRIVATE: tuple[Net, ...] = tuple(
    Net(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15")
)

MAX_RULES = 256
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class PolicyError(ValueError):
    """The policy is malformed; the message says which entry and why."""


def _network(entry: str) -> Net | None:
    try:
        return Net(entry, strict=False)
    except ValueError:
        return None


def _name(entry: str) -> str:
    """Validate a host name or ``*.`` wildcard; return it lower-cased without a trailing dot."""
    name = entry.strip().lower().rstrip(".")
    labels = name[2:].split(".") if name.startswith("*.") else name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise PolicyError(
            f"{entry!r} is neither an IPv4 CIDR (like 203.0.113.0/24) nor a host "
            f"name (like pypi.org or *.example.com)"
        )
    if labels[-1].isdigit():
        raise PolicyError(f"{entry!r} looks like a malformed IPv4 address")
    return name


def _contained(net: Net, ranges: Iterable[Net]) -> bool:
    return any(net.subnet_of(r) for r in ranges)


def _subtract(nets: list[Net], hole: Net) -> list[Net]:
    out: list[Net] = []
    for net in nets:
        if net.subnet_of(hole):
            continue
        if hole.subnet_of(net):
            out.extend(net.address_exclude(hole))
        else:
            out.append(net)
    return out


@dataclass(frozen=True)
class NetworkPolicy:
    """A sandbox's egress rules plus its limits (``None`` = the engine's defaults)."""

    allow_out: tuple[str, ...] = ()
    deny_out: tuple[str, ...] = ()
    max_connections: int | None = None
    bandwidth_mbit: int | None = None

    @classmethod
    def parse(cls, value: Any) -> "NetworkPolicy | None":
        """``"none"``/``None`` -> None (loopback only); a dict -> a validated policy."""
        if value is None or value == "none":
            return None
        if not isinstance(value, dict):
            raise PolicyError('network must be "none" or an object with allow_out/deny_out')
        unknown = set(value) - {"allow_out", "deny_out", "max_connections", "bandwidth_mbit"}
        if unknown:
            raise PolicyError(
                f"unknown network keys {sorted(unknown)}; use allow_out, deny_out, "
                f"max_connections, bandwidth_mbit"
            )
        allow, deny = value.get("allow_out") or [], value.get("deny_out") or []
        if not all(isinstance(x, list) and all(isinstance(e, str) for e in x) for x in (allow, deny)):
            raise PolicyError("allow_out and deny_out must be lists of strings")
        if len(allow) + len(deny) > MAX_RULES:
            raise PolicyError(f"at most {MAX_RULES} rules per sandbox")
        allow_out = []
        for entry in allow:
            net = _network(entry)
            if net is not None and _contained(net, ALWAYS_DENIED):
                raise PolicyError(
                    f"{entry} is always denied (host, link-local, metadata or "
                    f"reserved addresses) and cannot be allowed"
                )
            allow_out.append(str(net) if net is not None else _name(entry))
        deny_out = []
        for entry in deny:
            net = _network(entry)
            if net is None:
                raise PolicyError(
                    f"deny_out takes IPv4 CIDRs only, not {entry!r} (a name's "
                    f"addresses are shared; deny by leaving it out of allow_out)"
                )
            deny_out.append(str(net))
        limits = {}
        for key, top in (("max_connections", 65536), ("bandwidth_mbit", 100_000)):
            v = value.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top):
                raise PolicyError(f"{key} must be an integer between 1 and {top}")
            limits[key] = v
        return cls(tuple(dict.fromkeys(allow_out)), tuple(dict.fromkeys(deny_out)), **limits)

    def public(self) -> dict[str, Any]:
        """The policy as callers gave it (normalised)."""
        out: dict[str, Any] = {"allow_out": list(self.allow_out), "deny_out": list(self.deny_out)}
        for key in ("max_connections", "bandwidth_mbit"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e for e in self.allow_out if _network(e) is None)

    def allows_name(self, name: str) -> bool:
        """Whether the resolver may answer ``name`` with addresses to let through."""
        name = name.lower().rstrip(".")
        for pattern in self.names:
            if pattern.startswith("*."):
                if name.endswith(pattern[1:]):
                    return True
            elif name == pattern:
                return True
        return False

    def allowed_ranges(self, extra_denied: Iterable[Net] = ()) -> list[Net]:
        """The CIDRs let through by the CIDR rules (names aside), collapsed."""
        rules = [(Net(e), True) for e in self.allow_out if _network(e) is not None]
        rules += [(Net(e), False) for e in self.deny_out]
        # Broad first, and deny before allow at equal length: the later (narrower, or allow)
        # rule overrides.
        rules.sort(key=lambda r: (r[0].prefixlen, r[1]))
        allowed: list[Net] = []
        for net, allow in rules:
            allowed = _subtract(allowed, net)
            if allow:
                allowed.append(net)
        explicit_private = [n for n, allow in rules if allow and _contained(n, PRIVATE)]
        for hole in PRIVATE:
            allowed = _subtract(allowed, hole)
        # Re-add the explicitly allowed private CIDRs, minus any narrower deny inside them.
        for net in explicit_private:
            kept = [net]
            for d, allow in rules:
                if not allow and d.prefixlen > net.prefixlen and d.subnet_of(net):
                    kept = _subtract(kept, d)
            allowed.extend(kept)
        for hole in (*ALWAYS_DENIED, *extra_denied):
            allowed = _subtract(allowed, hole)
        return list(ipaddress.collapse_addresses(allowed))

    def resolves_any(self) -> bool:
        """Whether DNS answers every name (some public range is allowed by CIDR)."""
        return any(not _contained(n, PRIVATE) for n in self.allowed_ranges())


def admissible(address: str, extra_denied: Iterable[Net] = ()) -> bool:
    """Whether a resolved address may enter a sandbox's allow set (DNS-rebinding guard)."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return not any(ip in n for n in (*ALWAYS_DENIED, *PRIVATE, *extra_denied))

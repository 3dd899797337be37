"""The operator's network settings (engine-wide), from the environment or given in code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def host_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """The IPv4 nameservers of the host's /etc/resolv.conf (what the resolver forwards to)."""
    found = []
    try:
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
                found.append(parts[1])
    except OSError:
        pass
    return tuple(found) or ("127.0.0.1",)


def _env_path(name: str, default: Path | None) -> Path | None:
    value = os.environ.get(name)
    if value is None:
        return default
    return Path(value) if value else None


@dataclass(frozen=True)
class NetConfig:
    """Engine-wide network settings.

    ``ca_bundle`` is installed read-only as every networked sandbox's trust store (``None``:
    keep the image's own). ``upstream_dns`` is where the resolver forwards allowed names
    (default: the host's /etc/resolv.conf). ``uplink_netns`` sends all sandbox egress into that
    network namespace instead of the host's routing table (tests play the outside world there).
    """

    ca_bundle: Path | None = HOST_CA_BUNDLE
    upstream_dns: tuple[str, ...] = field(default_factory=host_nameservers)
    uplink_netns: Path | None = None
    bandwidth_mbit: int = 100
    max_connections: int = 256
    dns_min_ttl: int = 60
    dns_max_ttl: int = 3600
    dns_rate: float = 50.0
    dns_burst: float = 200.0
    proxy_port: int = 15001
    proxy_max_connections: int = 0  # engine-wide; 0: from the file descriptor limit
    egress_log_bytes: int = 1 << 20

    @classmethod
    def from_env(cls) -> "NetConfig":
        """Read ``STOCKADE_CA_BUNDLE`` (empty: none), ``STOCKADE_NET_DNS`` (comma-separated),
        ``STOCKADE_NET_UPLINK_NETNS``, ``STOCKADE_NET_BANDWIDTH_MBIT``,
        ``STOCKADE_NET_MAX_CONNECTIONS``, ``STOCKADE_NET_DNS_RATE`` (questions a second per
        sandbox), ``STOCKADE_NET_DNS_BURST``, ``STOCKADE_NET_EGRESS_LOG_BYTES``,
        ``STOCKADE_NET_PROXY_MAX_CONNECTIONS`` (engine-wide)."""
        dns = tuple(x.strip() for x in os.environ.get("STOCKADE_NET_DNS", "").split(",") if x.strip())
        return cls(
            ca_bundle=_env_path("STOCKADE_CA_BUNDLE", HOST_CA_BUNDLE),
            upstream_dns=dns or host_nameservers(),
            uplink_netns=_env_path("STOCKADE_NET_UPLINK_NETNS", None),
            bandwidth_mbit=int(os.environ.get("STOCKADE_NET_BANDWIDTH_MBIT", "100")),
            max_connections=int(os.environ.get("STOCKADE_NET_MAX_CONNECTIONS", "256")),
            dns_rate=float(os.environ.get("STOCKADE_NET_DNS_RATE", "50")),
            dns_burst=float(os.environ.get("STOCKADE_NET_DNS_BURST", "200")),
            proxy_max_connections=int(os.environ.get("STOCKADE_NET_PROXY_MAX_CONNECTIONS", "0")),
            egress_log_bytes=int(os.environ.get("STOCKADE_NET_EGRESS_LOG_BYTES", str(1 << 20))),
        )

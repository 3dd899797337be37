"""E2B's control-plane shapes and the table of names between E2B and Stockade.

Requests are validated into these models at the edge; responses are rendered from the
engine's public sandbox description (``SandboxRecord.public()``).
"""

from __future__ import annotations

import datetime
import math
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

from ...models import MAX_FORK, NetworkPolicy, SandboxInfo, SandboxSpec, SandboxStats

#: The envd version reported to the SDK; it gates client features (e2b/envd/versions.py):
#: recursive watch, stdin flag, default user, CloseStdin and octet-stream uploads are served;
#: upload metadata (0.6.2) and watch entries (0.6.3) are not, so the SDK must not try them.
ENVD_VERSION = "0.5.7"
CLIENT_ID = "stockade"
#: E2B template names that mean a Stockade template of another name.
TEMPLATE_ALIASES = {"code-interpreter-v1": "code-interpreter"}
#: Metadata key that chooses the isolation tier from unmodified E2B code.
ISOLATION_KEY = "stockade.isolation"
#: Metadata key that gives the sandbox Stockade secrets (docs/secrets.md), made with
#: Stockade's own ``/secrets`` API: ``"NAME"``, ``"NAME1,NAME2"`` or ``"ENV_VAR=NAME,..."``.
SECRETS_KEY = "stockade.secrets"
#: Lifetime of forked sandboxes when the request names none (E2B's API default).
FORK_TIMEOUT = 15
E2B_STATES = {"running": "running", "paused": "paused", "stopped": "paused", "archived": "paused"}
MAX_TIMEOUT = 86400


class Loose(BaseModel):
    """A request body: unknown fields ignored (newer SDKs add some)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class NetworkConfig(Loose):
    allow_out: list[str] | None = Field(default=None, alias="allowOut", max_length=256)
    deny_out: list[str] | None = Field(default=None, alias="denyOut", max_length=256)
    dns_servers: Any = Field(default=None, alias="dnsServers")
    egress_proxy: Any = Field(default=None, alias="egressProxy")
    mask_request_host: Any = Field(default=None, alias="maskRequestHost")
    https_ports: Any = Field(default=None, alias="httpsPorts")
    rules: Any = None

    def refuse_unsupported(self) -> None:
        """E2B network options Stockade's egress policy has no counterpart for (yet)."""
        for name in ("dns_servers", "egress_proxy", "mask_request_host", "https_ports", "rules"):
            if getattr(self, name) not in (None, [], {}):
                alias = type(self).model_fields[name].alias or name
                hint = (
                    f"; for credentials, give Stockade secrets with metadata {SECRETS_KEY!r}"
                    if name == "rules"
                    else ""
                )
                raise ValueError(
                    f"network.{alias} is not supported by Stockade's E2B adapter "
                    f"(docs/compat-e2b.md); use allow_out / deny_out{hint}"
                )


class NetworkUpdate(NetworkConfig):
    """``PUT /sandboxes/{id}/network``: replaces the whole egress policy."""

    allow_internet_access: bool | None = None

    def policy(self) -> NetworkPolicy:
        self.refuse_unsupported()
        allow = (
            self.allow_out
            if self.allow_out is not None
            else (["0.0.0.0/0"] if self.allow_internet_access else [])
        )
        return NetworkPolicy(allow_out=allow, deny_out=self.deny_out or [])


class Mount(Loose):
    name: str = Field(min_length=1, max_length=63)
    path: str = Field(min_length=1, max_length=4096)


class AutoResume(Loose):
    enabled: bool = False


class NewSandbox(Loose):
    """``POST /sandboxes`` (v1, with ``secure``) and ``POST /v2/sandboxes``."""

    template_id: str = Field(alias="templateID", min_length=1, max_length=128)
    timeout: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT)
    secure: bool = True
    allow_internet_access: bool | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    env_vars: dict[str, str] = Field(default_factory=dict, alias="envVars", max_length=256)
    auto_pause: bool = Field(default=False, alias="autoPause")
    network: NetworkConfig | None = None
    volume_mounts: list[Mount] = Field(default_factory=list, alias="volumeMounts", max_length=16)
    auto_resume: AutoResume | None = Field(default=None, alias="autoResume")
    mcp: Any = None
    iam: Any = None

    def refuse_unsupported(self) -> None:
        """Options that would silently not happen: refused, with what to do instead."""
        if self.mcp:
            raise ValueError(
                "the MCP gateway (mcp=...) is not supported by Stockade's E2B "
                "adapter; Stockade serves MCP itself at /mcp"
            )
        if self.iam:
            raise ValueError("iam workload tokens are not supported by Stockade's E2B adapter")
        if self.network is not None:
            self.network.refuse_unsupported()

    def spec(self) -> SandboxSpec:
        """The Stockade sandbox this asks for (raises ValueError for a bad tier or policy)."""
        self.refuse_unsupported()
        params: dict[str, Any] = {
            "template": TEMPLATE_ALIASES.get(self.template_id, self.template_id),
            "timeout": self.timeout,
            "envs": self.env_vars,
            "metadata": self.metadata,
            "on_timeout": "pause" if self.auto_pause else "kill",
            "auto_resume": self.auto_resume is not None and self.auto_resume.enabled,
        }
        if self.volume_mounts:
            params["volumes"] = {m.path: m.name for m in self.volume_mounts}
        if ISOLATION_KEY in self.metadata:
            params["isolation"] = self.metadata[ISOLATION_KEY]
        if SECRETS_KEY in self.metadata:
            params["secrets"] = secret_names(self.metadata[SECRETS_KEY])
        network = self.network or NetworkConfig()
        if self.allow_internet_access and network.allow_out is None:
            network = NetworkConfig(allowOut=["0.0.0.0/0"], denyOut=network.deny_out)
        if network.allow_out is not None or network.deny_out is not None:
            params["network"] = NetworkPolicy(
                allow_out=network.allow_out or [], deny_out=network.deny_out or []
            )
        return SandboxSpec.model_validate(params)


def secret_names(raw: str) -> dict[str, str]:
    """``"A,ENV=B"`` -> ``{"A": "A", "ENV": "B"}`` (the spec checks the names)."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        env, _, name = item.rpartition("=")
        env, name = env.strip() or name.strip(), name.strip()
        if env in found:
            raise ValueError(f"metadata {SECRETS_KEY!r}: {env} is given twice")
        found[env] = name
    return found


class Fork(Loose):
    """``POST /sandboxes/{id}/fork``: E2B's SDK allows up to 20 copies, Stockade 16."""

    timeout: int = Field(default=FORK_TIMEOUT, ge=1, le=MAX_TIMEOUT)
    count: int = Field(default=1, ge=1, le=MAX_FORK, strict=True)


class Timeout(Loose):
    timeout: int = Field(ge=0, le=MAX_TIMEOUT)


class Refresh(Loose):
    duration: int | None = Field(default=None, ge=0, le=3600)


class Pause(Loose):
    memory: bool = True


class Connect(Loose):
    timeout: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT)
    memory: bool | None = None


def when(unix: float) -> datetime.datetime:
    """A UTC time at the microsecond precision the wire carries."""
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc)


def iso(unix: float) -> str:
    return when(unix).isoformat().replace("+00:00", "Z")


def created(info: SandboxInfo, envd_token: str, traffic_token: str) -> dict[str, Any]:
    """``Sandbox``: the create, connect and resume result."""
    return {
        "templateID": info.template,
        "sandboxID": info.id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": envd_token,
        "trafficAccessToken": traffic_token,
        "domain": None,
    }


def state(info: SandboxInfo) -> str:
    return E2B_STATES.get(info.state, "paused")


def listed(info: SandboxInfo) -> dict[str, Any]:
    """``ListedSandbox``."""
    return {
        "templateID": info.template,
        "sandboxID": info.id,
        "clientID": CLIENT_ID,
        "startedAt": iso(info.created_at),
        "endAt": iso(info.expires_at),
        "cpuCount": max(1, math.ceil(info.cpu)),
        "memoryMB": info.memory_mb,
        "diskSizeMB": info.disk_mb,
        "state": state(info),
        "envdVersion": ENVD_VERSION,
        "metadata": info.metadata,
    }


def detail(info: SandboxInfo, envd_token: str) -> dict[str, Any]:
    """``SandboxDetail``."""
    return {
        **listed(info),
        "envdAccessToken": envd_token,
        "lifecycle": {
            "autoResume": info.auto_resume,
            "onTimeout": "pause" if info.on_timeout == "pause" else "kill",
        },
    }


def metric(info: SandboxInfo, stats: SandboxStats, now: float) -> dict[str, Any]:
    """One ``SandboxMetric`` sampled now: CPU as the average since creation."""
    cpus = max(1, math.ceil(info.cpu))
    elapsed = max(now - info.created_at, 1e-3)
    return {
        "timestamp": iso(now),
        "timestampUnix": int(now),
        "cpuCount": cpus,
        "cpuUsedPct": round(min(100.0, 100 * stats.cpu_seconds / (elapsed * cpus)), 2),
        "memUsed": stats.memory_bytes,
        "memTotal": stats.memory_limit_bytes,
        "memCache": 0,
        "diskUsed": 0,
        "diskTotal": info.disk_mb << 20,
    }


def metadata_filter(raw: str | None) -> dict[str, str]:
    """``metadata=k%3Dv%26k2%3Dv2`` (already URL-decoded once): ``{k: v, k2: v2}``."""
    wanted: dict[str, str] = {}
    for pair in (raw or "").split("&"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"metadata filter {pair!r} must look like key=value")
        wanted[unquote(key)] = unquote(value)
    return wanted

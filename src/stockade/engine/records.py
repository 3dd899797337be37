"""A sandbox's record: what the engine knows about it, kept on disk as JSON."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..models import SandboxInfo
from ..runtimes.base import NetworkAttachment, Resources, SandboxSpec, VolumeMount


@dataclass
class SandboxRecord:
    """One sandbox, as persisted in ``<data>/sandboxes/<id>/state.json``."""

    id: str
    tier: str
    image: str
    resources: Resources
    directory: Path
    timeout: float
    created_at: float = field(default_factory=time.time)
    expires_at: float = 0.0
    envs: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    state: str = "creating"
    network: dict[str, Any] | None = None  # the egress policy; None: loopback only
    attachment: dict[str, str] | None = None  # NetworkAttachment fields, as strings
    persistence: str = "ephemeral"  # or "workspace": stop keeps the files (lifecycle.py)
    on_timeout: str = "kill"  # or "pause" or "stop"
    auto_delete: float = 7 * 86400.0  # seconds a paused or stopped sandbox is kept
    paused_with: str | None = None  # "checkpoint" (memory on disk) or "freezer" (in RAM)
    volumes: list[dict[str, Any]] = field(default_factory=list)  # {volume, path, read_only, source}
    auto_archive: float | None = None  # seconds after a stop to archive the layer (None: never)
    archive_at: float | None = None  # when a stopped sandbox is archived (lifecycle.py)
    delete_at: float | None = None  # when it is deleted whatever its state (its ttl)
    owner: str = ""  # the tenant (from the control plane): its secrets, events, end record
    secrets: dict[str, str] = field(default_factory=dict)  # placeholder -> secret name
    reason: str | None = None  # why it is in its state, when nobody asked (SandboxInfo.reason)
    message: str | None = None  # the reason in words ("out of memory (python3)")
    auto_resume: bool = False  # resume/start on the next request that uses it
    idle_timeout: bool = False  # the timeout counts from the last activity
    last_active_at: float = field(default_factory=time.time)
    oom_seen: int = 0  # the cgroup's OOM kills already reported (usage.py)
    pids_seen: int = 0  # the forks its pids limit refused, already reported (usage.py)

    @property
    def deadline(self) -> float:
        """When the engine's timer next acts on this sandbox (expiry, auto-archive or ttl)."""
        return min(self.expires_at, self.archive_at or self.expires_at, self.delete_at or self.expires_at)

    @property
    def spec(self) -> SandboxSpec:
        net = self.attachment
        return SandboxSpec(
            id=self.id,
            image=self.image,
            resources=self.resources,
            directory=self.directory,
            network=NetworkAttachment(
                netns=Path(net["netns"]),
                resolv_conf=Path(net["resolv_conf"]),
                ca_bundle=Path(net["ca_bundle"]) if net.get("ca_bundle") else None,
            )
            if net
            else None,
            volumes=tuple(
                VolumeMount(source=Path(v["source"]), destination=v["path"], read_only=bool(v["read_only"]))
                for v in self.volumes
            ),
        )

    def info(self) -> SandboxInfo:
        """What callers see."""
        return SandboxInfo(**self._public())

    def _public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "isolation": self.tier,
            "template": self.image,
            "state": self.state,
            "reason": self.reason,
            "message": self.message,
            "cpu": self.resources.cpu,
            "memory_mb": self.resources.memory_mb,
            "disk_mb": self.resources.disk_mb,
            "pids": self.resources.pids,
            "metadata": dict(self.metadata),
            "envs": dict(self.envs),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "timeout": self.timeout,
            "network": dict(self.network) if self.network is not None else "none",
            "persistence": self.persistence,
            "on_timeout": self.on_timeout,
            "auto_delete": self.auto_delete,
            "auto_archive": self.auto_archive,
            "delete_at": self.delete_at,
            "volumes": [
                {"volume": v["volume"], "path": v["path"], "read_only": v["read_only"]} for v in self.volumes
            ],
            "secrets": sorted(self.secrets.values()),
            "auto_resume": self.auto_resume,
            "idle_timeout": self.idle_timeout,
            "last_active_at": self.last_active_at,
        }

    def save(self) -> None:
        """Write state.json atomically (write a temporary file, then rename)."""
        data = asdict(self)
        data["directory"] = str(self.directory)
        path = self.directory / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "SandboxRecord":
        """Read a state.json; raises ValueError if it is not a valid record."""
        try:
            data = json.loads(path.read_text())
            data["resources"] = Resources(**data["resources"])
            data["directory"] = Path(data["directory"])
            return cls(**data)
        except (OSError, TypeError, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable sandbox record {path}: {exc}") from None

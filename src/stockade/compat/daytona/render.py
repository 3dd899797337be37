"""Stockade's descriptions rendered as Daytona's objects (fields and types as the SDK checks
them: integers where it wants integers, every required field present)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ...engine.lifecycle import MAX_AUTO_DELETE
from ._base import TOOLBOX, gib
from .wire import CLASSES, NAME_KEY, RESERVED, STATES

TARGET = "local"
MAX_TIMEOUT = 86400.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def labels(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if not k.startswith(RESERVED)}


def minutes(seconds: float | None) -> int:
    return 0 if seconds is None else int(round(seconds / 60))


def auto_stop(info: dict[str, Any]) -> int:
    """Minutes before a started sandbox stops; 0 when it never does (the longest timeout)."""
    if info.get("on_timeout") != "stop" or info["timeout"] >= MAX_TIMEOUT:
        return 0
    return max(1, minutes(info["timeout"]))


def auto_delete(info: dict[str, Any]) -> int:
    """Minutes a stopped sandbox is kept; -1 for Stockade's longest (Daytona's "never")."""
    seconds = info.get("auto_delete")
    if seconds is None or seconds >= MAX_AUTO_DELETE:
        return -1
    return minutes(seconds)


def sandbox(info: dict[str, Any], tenant: str, base: str, *, full: bool = True,
            state: str | None = None) -> dict[str, Any]:
    """A Daytona Sandbox (``full``) or SandboxListItem from a Stockade sandbox description."""
    network = info.get("network")
    allow = network.get("allow_out", []) if isinstance(network, dict) else []
    everywhere = "0.0.0.0/0" in allow
    created = iso(info["created_at"])
    out: dict[str, Any] = {
        "id": info["id"],
        "organizationId": tenant,
        "name": info["metadata"].get(NAME_KEY, info["id"]),
        "snapshot": info["template"],
        "user": "user",
        "labels": labels(info["metadata"]),
        "public": False,
        "networkBlockAll": not allow,
        "kvm": False,
        "target": TARGET,
        "cpu": max(1, int(-(-info["cpu"] // 1))),
        "gpu": 0,
        "memory": gib(info["memory_mb"]),
        "disk": gib(info["disk_mb"]),
        "state": state or STATES.get(info["state"], "unknown"),
        "desiredState": "destroyed" if state == "destroyed" else
        ("started" if info["state"] == "running" else info["state"]),
        "errorReason": None,
        "recoverable": False,
        "backupState": "None",
        "autoStopInterval": auto_stop(info),
        "autoArchiveInterval": minutes(info.get("auto_archive")),
        "autoDeleteInterval": auto_delete(info),
        "createdAt": created,
        "updatedAt": created,
        "lastActivityAt": created,
        "sandboxClass": CLASSES.get(info["isolation"], "container"),
        "runnerId": info["isolation"],
        "toolboxProxyUrl": sandbox_toolbox(base),
    }
    if full:
        out.update({
            "env": dict(info["envs"]),
            "networkAllowList": None if everywhere else
            ",".join(a for a in allow if "/" in a) or None,
            "domainAllowList": ",".join(a for a in allow if "/" not in a) or None,
            "volumes": [{"volumeId": v["volume"], "mountPath": v["path"]}
                        for v in info.get("volumes", [])],
        })
    return out


def volume(info: dict[str, Any], tenant: str) -> dict[str, Any]:
    created = iso(info["created_at"])
    return {"id": info["name"], "name": info["name"], "organizationId": info.get("owner") or tenant,
            "state": "ready", "createdAt": created, "updatedAt": created, "lastUsedAt": None,
            "errorReason": None}


def snapshot(template: dict[str, Any], defaults: Any) -> dict[str, Any]:
    """A Daytona SnapshotDto for a Stockade template (resources: the server's defaults)."""
    return {"id": template["name"], "organizationId": template.get("owner"),
            "general": template.get("owner") is None, "name": template["name"],
            "imageName": template["name"], "state": "active",
            "size": round(template.get("size_bytes", 0) / (1 << 30), 3),
            "entrypoint": None, "cpu": max(1, int(-(-defaults.cpu // 1))), "gpu": 0,
            "mem": gib(defaults.memory_mb), "disk": gib(defaults.disk_mb), "errorReason": None,
            "createdAt": template["created"], "updatedAt": template["created"],
            "lastUsedAt": None, "sourceSandboxId": None}


def sandbox_toolbox(base: str) -> str:
    return base + TOOLBOX

"""Stockade's descriptions rendered as Daytona's objects (fields and types as the SDK checks
them: integers where it wants integers, every required field present)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from ...models import SandboxEnd, SandboxInfo, TemplateInfo, VolumeInfo
from ._base import TOOLBOX, gib
from .wire import CLASSES, KEEP_LONGEST, NAME_KEY, RESERVED, STATES, never_stops

TARGET = "local"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def labels(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if not k.startswith(RESERVED)}


def minutes(seconds: float | None) -> int:
    return 0 if seconds is None else int(round(seconds / 60))


def auto_stop(info: SandboxInfo, on_timeout: str = "stop") -> int:
    """Minutes of inactivity before a started sandbox stops (``on_timeout="pause"``: pauses);
    0 when it never does (the longest timeout, or the other action)."""
    if info.on_timeout != on_timeout or never_stops(info):
        return 0
    return max(1, minutes(info.timeout))


def error_reason(info: SandboxInfo) -> str | None:
    """Why the sandbox is as it is when nobody asked: ``"out of memory (python3)"``..."""
    return info.message or info.reason


def auto_delete(info: SandboxInfo) -> int:
    """Minutes a stopped sandbox is kept; -1 for Stockade's longest (Daytona's "never")."""
    if info.auto_delete is None or info.auto_delete >= KEEP_LONGEST:
        return -1
    return minutes(info.auto_delete)


def vcpus(cpu: float) -> int:
    return max(1, math.ceil(cpu))


def sandbox(
    info: SandboxInfo, tenant: str, base: str, *, full: bool = True, state: str | None = None
) -> dict[str, Any]:
    """A Daytona Sandbox (``full``) or SandboxListItem from a Stockade sandbox."""
    allow: list[str] = info.network.get("allow_out", []) if isinstance(info.network, dict) else []
    created = iso(info.created_at)
    out: dict[str, Any] = {
        "id": info.id,
        "organizationId": tenant,
        "name": info.metadata.get(NAME_KEY, info.id),
        "snapshot": info.template,
        "user": "user",
        "labels": labels(info.metadata),
        "public": False,
        "networkBlockAll": not allow,
        "kvm": False,
        "target": TARGET,
        "cpu": vcpus(info.cpu),
        "gpu": 0,
        "memory": gib(info.memory_mb),
        "disk": gib(info.disk_mb),
        "state": state or STATES.get(info.state, "unknown"),
        "desiredState": "destroyed"
        if state == "destroyed"
        else ("started" if info.state == "running" else info.state),
        "errorReason": error_reason(info),
        "recoverable": False,
        "backupState": "None",
        "autoStopInterval": auto_stop(info),
        "autoPauseInterval": auto_stop(info, "pause"),
        "autoArchiveInterval": minutes(info.auto_archive),
        "autoDeleteInterval": auto_delete(info),
        "createdAt": created,
        "updatedAt": created,
        "lastActivityAt": iso(info.last_active_at or info.created_at),
        "sandboxClass": CLASSES.get(info.isolation, "container"),
        "runnerId": info.isolation,
        "toolboxProxyUrl": sandbox_toolbox(base),
    }
    if full:
        out.update(
            {
                "env": dict(info.envs),
                "networkAllowList": None
                if "0.0.0.0/0" in allow
                else ",".join(a for a in allow if "/" in a) or None,
                "domainAllowList": ",".join(a for a in allow if "/" not in a) or None,
                "volumes": [{"volumeId": v["volume"], "mountPath": v["path"]} for v in info.volumes],
            }
        )
    return out


#: End reasons of sandboxes that are simply gone for Daytona (deleted by the user, or by
#: auto-delete): those read as missing, the others as state ``error`` with the reason.
GONE = ("killed", "timeout")


def ended(end: SandboxEnd, tenant: str, base: str) -> dict[str, Any]:
    """A sandbox that ended on its own (out of memory, host lost...): Daytona's ``error``
    state, with the end's message as ``errorReason``."""
    out = sandbox(end.sandbox, tenant, base, state="error")
    out.update(desiredState="destroyed", errorReason=end.message, updatedAt=iso(end.ended_at))
    return out


def volume(info: VolumeInfo, tenant: str) -> dict[str, Any]:
    created = iso(info.created_at)
    return {
        "id": info.name,
        "name": info.name,
        "organizationId": info.owner or tenant,
        "state": "ready",
        "createdAt": created,
        "updatedAt": created,
        "lastUsedAt": None,
        "errorReason": None,
    }


def snapshot(template: TemplateInfo, defaults: Any) -> dict[str, Any]:
    """A Daytona SnapshotDto for a Stockade template (resources: the server's defaults)."""
    return {
        "id": template.name,
        "organizationId": template.owner,
        "general": template.owner is None,
        "name": template.name,
        "imageName": template.name,
        "state": "active",
        "size": round(template.size_bytes / (1 << 30), 3),
        "entrypoint": None,
        "cpu": vcpus(defaults.cpu),
        "gpu": 0,
        "mem": gib(defaults.memory_mb),
        "disk": gib(defaults.disk_mb),
        "errorReason": None,
        "createdAt": template.created,
        "updatedAt": template.created,
        "lastUsedAt": None,
        "sourceSandboxId": None,
    }


def sandbox_toolbox(base: str) -> str:
    return base + TOOLBOX

"""Toolbox system calls: ``system/metrics`` (the sandbox's own usage, from its cgroup and its
filesystem), ``port`` (TCP ports listening inside the sandbox) and ``env`` (the environment of
processes started from now on)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Path
from pydantic import Field

from ...models import ProcessSpec
from ._base import TOOLBOX, ControlDep, DaytonaRoute, ToolboxSandbox
from .process import run
from .wire import Body

router = APIRouter(prefix=TOOLBOX + "/{sandboxId}", route_class=DaytonaRoute, tags=["daytona toolbox"])
#: Prints the root filesystem's size and use, and the listening TCP ports, as JSON.
PROBE = r"""
import json, os
st = os.statvfs("/")
ports = set()
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        with open(name) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    except OSError:
        pass
print(json.dumps({"total": st.f_blocks * st.f_frsize, "free": st.f_bavail * st.f_frsize,
                  "ports": sorted(ports)}))
"""
SAMPLE = 0.2


async def _probe(ctl: ControlDep, sandbox: str) -> dict[str, Any]:
    output, _ = await run(ctl.engine, sandbox, ProcessSpec(argv=["python3", "-c", PROBE]))
    found: dict[str, Any] = json.loads(output)
    return found


@router.get("/system/metrics")
async def system_metrics(sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, Any]:
    """CPU (over a short sample), memory and disk of the sandbox."""
    info = await ctl.engine.sandboxes.get(sandbox)
    first = await ctl.engine.sandboxes.stats(sandbox)
    started = time.monotonic()
    probe = await _probe(ctl, sandbox)
    await asyncio.sleep(max(0.0, SAMPLE - (time.monotonic() - started)))
    second = await ctl.engine.sandboxes.stats(sandbox)
    elapsed = time.monotonic() - started
    busy = max(0.0, second.cpu_seconds - first.cpu_seconds) / (elapsed * info.cpu) * 100
    now = datetime.now(timezone.utc)
    return {
        "cpuCount": max(1, math.ceil(info.cpu)),
        "cpuUsedPct": round(min(100.0, busy), 2),
        "memTotal": second.memory_limit_bytes,
        "memUsed": second.memory_bytes,
        "memCache": 0,
        "diskTotal": probe["total"],
        "diskFree": probe["free"],
        "diskUsed": probe["total"] - probe["free"],
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "timestampUnix": int(now.timestamp()),
    }


@router.get("/port")
async def ports(sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, list[int]]:
    return {"ports": (await _probe(ctl, sandbox))["ports"]}


@router.get("/port/{port}/in-use")
async def port_in_use(
    port: int = Path(ge=1, le=65535), *, sandbox: ToolboxSandbox, ctl: ControlDep
) -> dict[str, bool]:
    return {"isInUse": port in (await _probe(ctl, sandbox))["ports"]}


class UpdateEnv(Body):
    set: dict[str, str] | None = Field(default=None, max_length=256)
    unset: list[str] | None = Field(default=None, max_length=256)
    unset_value_prefix: str | None = Field(default=None, alias="unsetValuePrefix", max_length=256)


@router.post("/env")
async def update_env(body: UpdateEnv, sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, str]:
    """Drop the ``unset`` names (and those whose value starts with ``unsetValuePrefix``), then
    apply ``set``; processes, sessions and PTYs started from now on see the result."""
    info = await ctl.engine.sandboxes.get(sandbox)
    drop = set(body.unset or [])
    prefix = body.unset_value_prefix
    envs = {k: v for k, v in info.envs.items() if k not in drop and not (prefix and v.startswith(prefix))}
    await ctl.engine.sandboxes.set_envs(sandbox, {**envs, **(body.set or {})})
    return {"message": "environment updated"}

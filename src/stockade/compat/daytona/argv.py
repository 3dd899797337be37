"""Run one program in a sandbox with argv (no shell) and answer its output, or a 400 with what
it said: the toolbox calls that are a sandbox tool's job (git, chmod, chown)."""

from __future__ import annotations

from typing import Any

from ...engine import Engine
from ...models import ProcessSpec
from ._base import DaytonaError


async def run(
    eng: Engine,
    sandbox: str,
    argv: list[str],
    what: str,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    allow: tuple[int, ...] = (0,),
) -> str:
    """``argv``'s stdout; a 400 "``what`` failed: ..." unless its exit code is in ``allow``."""
    started = await eng.processes.start(sandbox, ProcessSpec(argv=argv, env=env or {}, user=user))
    out, err = bytearray(), bytearray()
    end: dict[str, Any] = {}
    async for event in started.events():
        if event["type"] == "stdout":
            out += event["data"]
        elif event["type"] == "stderr":
            err += event["data"]
        elif event["type"] == "end":
            end = event
    if end.get("exit_code") not in allow:
        said = (err or out).decode("utf-8", "replace").strip()[-2000:]
        raise DaytonaError(400, f"{what} failed: {said or 'exit ' + str(end.get('exit_code'))}")
    return out.decode("utf-8", "replace")

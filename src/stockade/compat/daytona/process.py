"""Toolbox one-shot commands and information: ``process/execute``, ``process/code-run``,
``user-home-dir``, ``work-dir``, ``version``. Output is stdout and stderr merged, in order."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from ...engine import Engine
from ...models import ProcessSpec
from ._base import TOOLBOX, ControlDep, DaytonaError, DaytonaRoute, ToolboxSandbox
from .wire import Body

router = APIRouter(prefix=TOOLBOX + "/{sandboxId}", route_class=DaytonaRoute, tags=["daytona toolbox"])
#: A command line run by bash (sh without it) with stderr joined to stdout; the line is ``$0``,
#: so it is never quoted or parsed by anything else.
SHELL = 'exec 2>&1; if [ -x /bin/bash ]; then exec /bin/bash -c "$0"; fi; exec /bin/sh -c "$0"'
#: A program run with stderr joined to stdout.
MERGED = 'exec 2>&1; exec "$@"'
RUNNERS = {"python": ["python3", "-c"], "javascript": ["node", "-e"], "typescript": ["ts-node", "-e"]}


class ExecuteRequest(Body):
    command: str = Field(min_length=1, max_length=1 << 20)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    envs: dict[str, str] | None = Field(default=None, max_length=256)
    timeout: int | None = Field(default=None, ge=0, le=86400)


class CodeRunRequest(Body):
    code: str = Field(max_length=1 << 20)
    language: str = Field(default="python", max_length=32)
    argv: list[str] | None = Field(default=None, max_length=1024)
    envs: dict[str, str] | None = Field(default=None, max_length=256)
    timeout: int | None = Field(default=None, ge=0, le=86400)


async def run(eng: Engine, sandbox: str, spec: ProcessSpec) -> tuple[str, dict[str, Any]]:
    """Run a process to its end; its output (decoded) and its end event."""
    process = await eng.processes.start(sandbox, spec)
    output = bytearray()
    end: dict[str, Any] = {}
    async for event in process.events():
        if event["type"] in ("stdout", "stderr", "pty"):
            output += event["data"]
        elif event["type"] == "end":
            end = event
    return output.decode("utf-8", "replace"), end


def _answer(output: str, end: dict[str, Any]) -> Any:
    if end.get("status") == "timeout":
        raise DaytonaError(408, "command execution timeout", "PROCESS_EXECUTION_TIMEOUT")
    exit_code = end.get("exit_code")
    return {"exitCode": exit_code if isinstance(exit_code, int) else -1, "result": output}


@router.post("/process/execute")
async def execute(body: ExecuteRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Any:
    """Run a shell command line; 408 when ``timeout`` seconds pass first (all of it killed)."""
    spec = ProcessSpec(
        argv=["/bin/sh", "-c", SHELL, body.command],
        cwd=body.cwd,
        env=body.envs or {},
        timeout=body.timeout or None,
    )
    return _answer(*await run(ctl.engine, sandbox, spec))


@router.post("/process/code-run")
async def code_run(body: CodeRunRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Any:
    """Run the snippet as a program of its language (python3, node, ts-node)."""
    runner = RUNNERS.get(body.language)
    if runner is None:
        raise DaytonaError(400, f"unsupported language {body.language!r}; use {', '.join(RUNNERS)}")
    spec = ProcessSpec(
        argv=["/bin/sh", "-c", MERGED, "sh", *runner, body.code, *(body.argv or [])],
        env=body.envs or {},
        timeout=body.timeout or None,
    )
    answer = _answer(*await run(ctl.engine, sandbox, spec))
    if isinstance(answer, dict):
        answer["artifacts"] = {"charts": []}
    return answer


async def _dirs(ctl: ControlDep, sandbox: str) -> list[str]:
    output, _ = await run(
        ctl.engine, sandbox, ProcessSpec(argv=["/bin/sh", "-c", 'printf "%s\\n%s" "$HOME" "$PWD"'])
    )
    return (output.split("\n") + ["", ""])[:2]


@router.get("/user-home-dir")
async def user_home_dir(sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, str]:
    return {"dir": (await _dirs(ctl, sandbox))[0]}


@router.get("/work-dir")
async def work_dir(sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, str]:
    return {"dir": (await _dirs(ctl, sandbox))[1]}


@router.get("/version")
async def version(sandbox: ToolboxSandbox) -> dict[str, str]:
    return {"version": "stockade"}

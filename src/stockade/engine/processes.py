"""The processes service: start, follow, feed and signal processes (``engine.processes``)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ..images import ImageError
from ..models import ProcessInfo, ProcessSelector, ProcessSpec
from ..runtimes.base import DriverError
from ..runtimes.channel import AgentCallError
from .errors import Unsupported
from .process import KEEPALIVE, ProcessRun, translate_agent_error
from .records import SandboxRecord

if TYPE_CHECKING:
    from .engine import Engine


class Processes:
    """Processes inside an engine's sandboxes, through each sandbox's agent."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine

    async def start(self, sandbox_id: str, spec: ProcessSpec) -> ProcessRun:
        """Start a process; iterate ``run.events()`` for its output and its end.

        The template's ENV, WORKDIR and USER apply where ``spec`` says nothing, and the
        sandbox's own env under the process's."""
        engine = self._engine
        record = engine.record(sandbox_id)
        if spec.pty is not None and not engine.drivers[record.tier].capabilities.pty:
            raise Unsupported.missing(record.tier, "pty", f"open a terminal in {sandbox_id}")
        config = self._image_config(record.image)
        params: dict[str, Any] = spec.agent_params()
        params["env"] = {**config.get("env", {}), **record.envs, **spec.env}
        if config.get("user") and not spec.user:
            params["user"] = config["user"]
        if config.get("workdir") and not spec.cwd:
            params["cwd"] = config["workdir"]
        params["keepalive"] = KEEPALIVE
        channel = await engine.channel(sandbox_id)
        driver = engine.drivers[record.tier]
        oom_before = await driver.oom_kills(record.spec)
        engine.commands[sandbox_id] = command_name(spec)
        stream = await engine.open_stream(channel, sandbox_id, "process.start", params)
        return ProcessRun(
            stream,
            oom_check=lambda said: self._oom_since(record, oom_before, said),
            diagnose=lambda: engine.diagnose(record),
            running=lambda: record.state == "running",
        )

    async def connect(self, sandbox_id: str, selector: ProcessSelector) -> ProcessRun:
        """Follow a running process (by pid or tag) from now on."""
        engine = self._engine
        record = engine.record(sandbox_id)
        stream = await engine.stream(
            sandbox_id, "process.connect", {**selector.agent_params(), "keepalive": KEEPALIVE}
        )
        return ProcessRun(
            stream,
            oom_check=lambda said: self._oom_since(record, None, said),
            diagnose=lambda: engine.diagnose(record),
            running=lambda: record.state == "running",
        )

    async def list(self, sandbox_id: str) -> list[ProcessInfo]:
        """The processes started through the agent that still run."""
        found = await self._engine.call(sandbox_id, "process.list", {})
        return [ProcessInfo.model_validate(p) for p in found]

    async def send_stdin(self, sandbox_id: str, selector: ProcessSelector, data: bytes) -> None:
        """Write ``data`` to the process's standard input (started with ``stdin=True``)."""
        stream = await self._engine.stream(sandbox_id, "process.input", selector.agent_params())
        try:
            await stream.send(data)
            await stream.close_send()
            await stream.result()
        except AgentCallError as exc:
            raise translate_agent_error(exc) from None

    async def close_stdin(self, sandbox_id: str, selector: ProcessSelector) -> None:
        await self._engine.call(sandbox_id, "process.close_stdin", selector.agent_params())

    async def signal(self, sandbox_id: str, selector: ProcessSelector, signal: str) -> None:
        """Send ``signal`` (TERM, KILL, INT, ...) to the process's group."""
        await self._engine.call(sandbox_id, "process.signal", {**selector.agent_params(), "signal": signal})

    async def resize(self, sandbox_id: str, selector: ProcessSelector, cols: int, rows: int) -> None:
        """Resize the process's terminal."""
        await self._engine.call(
            sandbox_id, "process.resize", {**selector.agent_params(), "cols": cols, "rows": rows}
        )

    def _image_config(self, image: str) -> dict[str, Any]:
        try:
            return self._engine.images.get(image).config or {}
        except ImageError:
            return {}

    async def _oom_since(self, record: SandboxRecord, before: int | None, said: bool) -> bool:
        """Whether a process that died of SIGKILL was the OOM killer's: its agent ``said`` so
        where the sandbox's own kernel enforces the limits (a microVM guest), else its runtime's
        cgroup counts more kills than ``before``. The sandbox's reason says so at once, not at
        the next usage sample."""
        usage = self._engine.usage
        if said:
            with contextlib.suppress(DriverError, OSError):
                await usage.notice(record, await usage.stats(record))
            return True
        if before is None:
            return False
        now = await self._engine.drivers[record.tier].oom_kills(record.spec)
        if now > max(before, record.oom_seen):  # say so at once, not at the next usage sample
            record.oom_seen = now
            await self._engine.note_oom(record)
        return now > before


def command_name(spec: ProcessSpec) -> str:
    """The program a process spec runs, as the kernel would name it: ``python3`` for
    ``python3 -c ...`` (the first word that is not an assignment or a shell wrapper)."""
    words = list(spec.argv or []) if spec.argv else (spec.cmd or "").split()
    for word in words:
        if "=" in word.split("/")[0] or word in ("env", "exec", "nohup"):
            continue
        return word.rsplit("/", 1)[-1][:15]  # the kernel's comm is at most 15 bytes
    return "sh"

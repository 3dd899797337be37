"""Processes in a sandbox: what to start, how to pick one, what is running."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ._base import Request, Result

UserName = Field(default=None, min_length=1, max_length=64)


class PtySize(Request):
    cols: int = Field(default=80, ge=1, le=1000)
    rows: int = Field(default=24, ge=1, le=1000)


class ProcessSpec(Request):
    """A process to start: exactly one of ``cmd`` (a shell string) or ``argv``."""

    cmd: str | None = Field(default=None, min_length=1, max_length=1 << 20)
    argv: list[str] | None = Field(default=None, min_length=1, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict, max_length=1024)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    user: str | None = UserName
    tag: str | None = Field(default=None, min_length=1, max_length=256)
    timeout: float | None = Field(default=None, gt=0, le=86400)
    stdin: bool = False
    pty: PtySize | None = None
    max_output: int | None = Field(default=None, ge=1, le=1 << 60)

    @model_validator(mode="after")
    def _one_command(self) -> "ProcessSpec":
        if (self.cmd is None) == (self.argv is None):
            raise ValueError("give exactly one of 'cmd' (a shell string) or 'argv' (a list)")
        return self

    def agent_params(self) -> dict[str, Any]:
        """The agent's ``process.start`` parameters (docs/protocol.md)."""
        return self.model_dump(exclude_none=True)


class ProcessSelector(Request):
    """A process picked by its ``pid`` or by the ``tag`` it was started with."""

    pid: int | None = Field(default=None, ge=1)
    tag: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_selector(self) -> "ProcessSelector":
        if self.pid is None and self.tag is None:
            raise ValueError("select the process by 'pid' or 'tag'")
        return self

    def agent_params(self) -> dict[str, Any]:
        return {"pid": self.pid} if self.pid is not None else {"tag": self.tag}


class Signal(ProcessSelector):
    signal: Literal["TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2", "STOP", "CONT"] = "KILL"


class Resize(ProcessSelector):
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


#: A tag starting with this marks a process that waits for input (a shell reading commands):
#: it does not keep an ``idle_timeout`` sandbox awake, as a code context's interpreter does not.
WAITING_TAG = "stockade-waiting:"


class ProcessInfo(Result):
    """A running process, as ``process.list`` reports it."""

    pid: int
    tag: str | None = None
    cmd: str | None = None  # the shell string, or the argv joined
    status: str | None = None
    pty: bool = False

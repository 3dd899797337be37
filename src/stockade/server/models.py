"""Request and response bodies of the HTTP API (pydantic), validated at the boundary."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Field(min_length=1, max_length=256)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSandbox(Strict):
    template: str | None = Field(default=None, min_length=1, max_length=64)
    isolation: Literal["container", "gvisor"] = "container"
    timeout: float | None = Field(default=None, ge=1, le=86400)
    envs: dict[str, str] = Field(default_factory=dict, max_length=256)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    cpu: float | None = Field(default=None, ge=0.05, le=64)
    memory_mb: int | None = Field(default=None, ge=32, le=262144)
    disk_mb: int | None = Field(default=None, ge=64, le=1048576)


class Sandbox(BaseModel):
    id: str
    isolation: str
    template: str
    state: str
    cpu: float
    memory_mb: int
    disk_mb: int
    pids: int
    metadata: dict[str, str]
    envs: dict[str, str]
    created_at: float
    expires_at: float
    timeout: float


class SandboxPage(BaseModel):
    items: list[Sandbox]
    next_cursor: str | None = None


class SetTimeout(Strict):
    timeout: float = Field(ge=1, le=86400)


class Pty(Strict):
    cols: int = Field(default=80, ge=1, le=1000)
    rows: int = Field(default=24, ge=1, le=1000)


class StartProcess(Strict):
    cmd: str | None = Field(default=None, min_length=1, max_length=1 << 20)
    argv: list[str] | None = Field(default=None, min_length=1, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict, max_length=1024)
    cwd: str | None = Field(default=None, min_length=1, max_length=4096)
    user: str | None = Field(default=None, min_length=1, max_length=64)
    tag: str | None = Field(default=None, min_length=1, max_length=256)
    timeout: float | None = Field(default=None, gt=0, le=86400)
    stdin: bool = False
    pty: Pty | None = None
    max_output: int | None = Field(default=None, ge=1, le=1 << 34)

    def agent_params(self) -> dict[str, Any]:
        if (self.cmd is None) == (self.argv is None):
            raise ValueError("give exactly one of 'cmd' (a shell string) or 'argv' (a list)")
        return self.model_dump(exclude_none=True)


class ProcessSelector(Strict):
    pid: int | None = Field(default=None, ge=1)
    tag: str | None = Field(default=None, min_length=1, max_length=256)

    def agent_params(self) -> dict[str, Any]:
        if self.pid is None and self.tag is None:
            raise ValueError("select the process by 'pid' or 'tag'")
        return self.model_dump(exclude_none=True)


class Signal(ProcessSelector):
    signal: Literal["TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2", "STOP", "CONT"] = "KILL"


class Resize(ProcessSelector):
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


class PathBody(Strict):
    path: str = Field(min_length=1, max_length=4096)
    user: str | None = Field(default=None, min_length=1, max_length=64)


class RenameBody(Strict):
    src: str = Field(min_length=1, max_length=4096)
    dst: str = Field(min_length=1, max_length=4096)
    user: str | None = Field(default=None, min_length=1, max_length=64)


class EntryInfo(BaseModel):
    name: str
    path: str
    type: str
    size: int
    mode: int
    permissions: str
    owner: str
    group: str
    modified_time: float
    symlink_target: str | None = None


class MakeDirResult(BaseModel):
    created: bool
    entry: EntryInfo


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None

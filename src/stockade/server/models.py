"""Request and response bodies of the HTTP API (pydantic), validated at the boundary."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Name = Field(min_length=1, max_length=256)


def check_path(path: str) -> str:
    """Refuse what can only be an attempt to walk out of a directory: '..' segments, NUL."""
    if "\x00" in path:
        raise ValueError("a path may not contain NUL bytes")
    if ".." in path.split("/"):
        raise ValueError(f"path {path!r} has a '..' segment; give the path without it")
    return path


SandboxPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(check_path)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkPolicy(Strict):
    """Egress rules (docs/network.md): CIDRs and host names (``*.`` wildcards) to allow, CIDRs
    to deny; everything else is denied, and the host, link-local, metadata and other sandboxes
    always are."""

    allow_out: list[str] = Field(default_factory=list, max_length=256)
    deny_out: list[str] = Field(default_factory=list, max_length=256)
    max_connections: int | None = Field(default=None, ge=1, le=65536)
    bandwidth_mbit: int | None = Field(default=None, ge=1, le=100000)


class CreateSandbox(Strict):
    template: str | None = Field(default=None, min_length=1, max_length=64)
    isolation: Literal["container", "gvisor", "microvm"] = "container"
    timeout: float | None = Field(default=None, ge=1, le=86400)
    envs: dict[str, str] = Field(default_factory=dict, max_length=256)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    cpu: float | None = Field(default=None, ge=0.05, le=64)
    memory_mb: int | None = Field(default=None, ge=32, le=262144)
    disk_mb: int | None = Field(default=None, ge=64, le=1048576)
    network: Literal["none"] | NetworkPolicy = "none"
    persistence: Literal["ephemeral", "workspace"] = "ephemeral"
    on_timeout: Literal["kill", "pause", "stop"] = "kill"
    auto_delete: float | None = Field(default=None, ge=1, le=365 * 86400,
                                      description="seconds a paused or stopped sandbox is kept")
    auto_archive: float | None = Field(default=None, ge=1, le=365 * 86400,
                                       description="archive a stopped workspace this many "
                                                   "seconds after it stopped (default: never)")
    volumes: dict[str, "VolumeName | VolumeMountSpec"] = Field(default_factory=dict,
                                                              max_length=32)


VolumeName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]


class VolumeMountSpec(Strict):
    volume: VolumeName
    read_only: bool = False


class VolumeMountInfo(BaseModel):
    volume: str
    path: str
    read_only: bool


class CreateVolume(Strict):
    name: VolumeName
    size_mb: int = Field(default=1024, ge=16, le=1048576)


class Volume(BaseModel):
    name: str
    size_mb: int
    created_at: float
    owner: str | None = None
    mounted_by: list[str] = Field(default_factory=list)


class VolumePage(BaseModel):
    items: list[Volume]
    next_cursor: str | None = None


class CreateSnapshot(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
                      description="the new template's name")


class TemplateInfo(BaseModel):
    name: str
    parent: str | None = None
    size_bytes: int
    files: int
    created: str
    owner: str | None = Field(default=None, description="the tenant that made it; null: shared")
    source: str | None = None
    config: dict[str, Any] | None = Field(
        default=None, description="env, workdir and user that processes of its sandboxes get")


class TemplatePage(BaseModel):
    items: list[TemplateInfo]
    next_cursor: str | None = None


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
    network: Literal["none"] | dict[str, Any] = "none"
    persistence: str = "ephemeral"
    on_timeout: str = "kill"
    auto_delete: float | None = None
    auto_archive: float | None = None
    volumes: list[VolumeMountInfo] = Field(default_factory=list)


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
    path: SandboxPath
    user: str | None = Field(default=None, min_length=1, max_length=64)


class RenameBody(Strict):
    src: SandboxPath
    dst: SandboxPath
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


TENANT_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class QuotaFields(Strict):
    """Per-tenant limits; a field left out (null) uses the server's default."""

    max_sandboxes: int | None = Field(default=None, ge=0, le=100000)
    max_vcpu: float | None = Field(default=None, ge=0, le=100000)
    max_memory_mb: int | None = Field(default=None, ge=0, le=1 << 31)
    max_lifetime: float | None = Field(default=None, ge=1, le=365 * 86400)
    max_disk_mb: int | None = Field(default=None, ge=0, le=1 << 40,
                                    description="host disk held by the tenant's sandboxes in "
                                                "any state (docs/limits.md)")


class CreateTenant(QuotaFields):
    name: str = Field(pattern=TENANT_NAME, description="lower-case letters, digits, - and _")


class TenantInfo(BaseModel):
    name: str
    created_at: float
    max_sandboxes: int
    max_vcpu: float
    max_memory_mb: int
    max_lifetime: float
    max_disk_mb: int
    sandboxes: int
    vcpu: float
    memory_mb: int
    disk_mb: int


class TenantPage(BaseModel):
    items: list[TenantInfo]
    next_cursor: str | None = None


class CreateKey(Strict):
    tenant: str | None = Field(default=None, pattern=TENANT_NAME,
                               description="the tenant the key acts for (default: your own); "
                                           "the admin key creates the tenant if needed")
    name: str | None = Field(default=None, min_length=1, max_length=128)
    expires_in: float | None = Field(default=None, gt=0, le=10 * 365 * 86400,
                                     description="seconds until the key stops working")


class KeyInfo(BaseModel):
    id: str = Field(description="the key's public prefix; the secret is never shown again")
    tenant: str
    name: str | None = None
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    state: Literal["active", "revoked", "expired"]


class NewKey(KeyInfo):
    key: str = Field(description="the secret key, shown only in this response")


class KeyPage(BaseModel):
    items: list[KeyInfo]
    next_cursor: str | None = None


class AuditEventInfo(BaseModel):
    id: int
    at: float
    tenant: str | None
    actor: str
    action: str
    target: str | None = None
    request_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class AuditPage(BaseModel):
    items: list[AuditEventInfo]
    next_cursor: str | None = None


class WhoAmI(BaseModel):
    tenant: str
    actor: str
    admin: bool

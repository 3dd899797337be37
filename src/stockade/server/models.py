"""Request and response bodies of the HTTP API (pydantic), validated at the boundary.

The sandbox, process, file, volume and template models are :mod:`stockade.models`, shared with
the engine and the SDK; this module adds the server's own (tenants, keys, audit, errors).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import (
    CreateVolume,
    EgressLog,
    EntryInfo,
    ForkResult,
    ForkSpec,
    MakeDirResult,
    NetworkPolicy,
    ProcessSelector,
    ProcessSpec,
    Resize,
    ResizeSpec,
    SandboxEnd,
    SandboxEvent,
    SandboxInfo,
    SandboxPage,
    SandboxPath,
    SandboxSpec,
    SandboxStats,
    Signal,
    TemplateInfo,
    TemplatePage,
    UsageHistory,
    VolumeInfo,
    VolumePage,
    check_path,
)

__all__ = [
    "CreateVolume",
    "EgressLog",
    "EntryInfo",
    "ForkResult",
    "ForkSpec",
    "ResizeSpec",
    "MakeDirResult",
    "NetworkPolicy",
    "ProcessSelector",
    "ProcessSpec",
    "Resize",
    "SandboxEnd",
    "SandboxEvent",
    "SandboxInfo",
    "SandboxPage",
    "SandboxPath",
    "SandboxSpec",
    "SandboxStats",
    "Signal",
    "TemplateInfo",
    "TemplatePage",
    "UsageHistory",
    "VolumeInfo",
    "VolumePage",
    "check_path",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetTimeout(Strict):
    timeout: float = Field(ge=1, le=86400)


class CreateSnapshot(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="the new template's name")


class PathBody(Strict):
    path: SandboxPath
    user: str | None = Field(default=None, min_length=1, max_length=64)


class RenameBody(Strict):
    src: SandboxPath
    dst: SandboxPath
    user: str | None = Field(default=None, min_length=1, max_length=64)


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
    max_disk_mb: int | None = Field(
        default=None,
        ge=0,
        le=1 << 40,
        description="host disk held by the tenant's sandboxes in any state (docs/limits.md)",
    )


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
    tenant: str | None = Field(
        default=None,
        pattern=TENANT_NAME,
        description="the tenant the key acts for (default: your own); "
        "the admin key creates the tenant if needed",
    )
    name: str | None = Field(default=None, min_length=1, max_length=128)
    expires_in: float | None = Field(
        default=None, gt=0, le=10 * 365 * 86400, description="seconds until the key stops working"
    )
    style: Literal["stockade", "e2b"] = Field(
        default="stockade",
        description="'e2b': a key shaped e2b_<hex>, which E2B's SDKs "
        "accept (docs/compat-e2b.md); it works everywhere",
    )


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


class SignInLink(BaseModel):
    """A one-time link that signs a browser in to the dashboard as the caller."""

    path: str = Field(description="/ui/login?token=...: append it to the server's address")
    url: str | None = Field(
        default=None,
        description="the whole link, when the server knows "
        "its own address (the local daemon's dashboard port)",
    )
    expires_at: float = Field(description="when the link stops working (it also works once)")

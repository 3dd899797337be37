"""Daytona's request bodies (camelCase, as the SDK sends them) and its names for states."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ...models import SandboxInfo

#: Stockade sandbox state -> Daytona sandbox state.
STATES = {
    "running": "started",
    "paused": "paused",
    "stopped": "stopped",
    "archived": "archived",
    "pooled": "creating",
}
#: Daytona sandbox class by Stockade tier.
CLASSES = {"container": "container", "gvisor": "container", "microvm": "linux-vm"}
#: Metadata keys this front end keeps for itself (never shown as labels).
RESERVED = "stockade.daytona/"
NAME_KEY = RESERVED + "name"
#: The label that picks a tier (Stockade's isolation), as ``stockade.isolation``.
TIER_LABEL = "stockade.isolation"
#: Daytona's default when a create gives no auto-stop interval (minutes).
DEFAULT_AUTO_STOP = 15
#: Daytona's default auto-archive interval (minutes after a stop): 7 days.
DEFAULT_AUTO_ARCHIVE = 7 * 24 * 60
#: Auto-delete "never": the longest a stopped sandbox may be kept (SandboxSpec's bound).
KEEP_LONGEST = 365 * 86400.0
#: The longest TTL (minutes): as long as a stopped sandbox may be kept.
MAX_TTL_MINUTES = int(KEEP_LONGEST // 60)
#: Auto-stop "never": the longest a sandbox may live (the engine's and the default quota's).
NEVER = 86400.0


def never_stops(info: SandboxInfo) -> bool:
    """Whether the sandbox runs until the end of its longest lifetime (Daytona: auto-stop 0)."""
    return info.timeout >= NEVER or info.expires_at >= info.created_at + NEVER - 10


class Body(BaseModel):
    """A Daytona request body: camelCase names, unknown fields ignored (newer SDKs send more)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class VolumeRef(Body):
    volume_id: str = Field(alias="volumeId", min_length=1, max_length=128)
    mount_path: str = Field(alias="mountPath", min_length=1, max_length=4096)
    subpath: str | None = None


class BuildInfo(Body):
    dockerfile_content: str | None = Field(default=None, alias="dockerfileContent", max_length=1 << 20)
    context_hashes: list[str] | None = Field(default=None, alias="contextHashes")


class NetworkSettings(Body):
    network_block_all: bool | None = Field(default=None, alias="networkBlockAll")
    network_allow_list: str | None = Field(default=None, alias="networkAllowList", max_length=65536)
    domain_allow_list: str | None = Field(default=None, alias="domainAllowList", max_length=65536)


class CreateSandbox(NetworkSettings):
    name: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )
    snapshot: str | None = Field(default=None, min_length=1, max_length=128)
    user: str | None = Field(default=None, min_length=1, max_length=64)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    public: bool | None = None
    cpu: int | None = Field(default=None, ge=1, le=64)
    gpu: int | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=1, le=256)
    disk: int | None = Field(default=None, ge=1, le=1024)
    auto_stop_interval: int | None = Field(default=None, alias="autoStopInterval", ge=0, le=1440)
    auto_pause_interval: int | None = Field(default=None, alias="autoPauseInterval", ge=0, le=1440)
    auto_archive_interval: int | None = Field(default=None, alias="autoArchiveInterval", ge=0, le=525600)
    auto_delete_interval: int | None = Field(default=None, alias="autoDeleteInterval", le=525600)
    ttl_minutes: int | None = Field(default=None, alias="ttlMinutes")
    volumes: list[VolumeRef] = Field(default_factory=list, max_length=32)
    build_info: BuildInfo | None = Field(default=None, alias="buildInfo")
    #: ``[{ENV_VAR: secret name}, ...]``, as the SDK sends its ``secrets`` dict.
    secrets: list[dict[str, str]] = Field(default_factory=list, max_length=32)

    def secret_envs(self) -> dict[str, str]:
        """The ``secrets`` entries as one ``{ENV_VAR: secret name}``."""
        out: dict[str, str] = {}
        for entry in self.secrets:
            for env, name in entry.items():
                if env in out:
                    raise ValueError(f"secrets: {env} is given twice")
                out[env] = name
        return out


class ForkSandbox(Body):
    """``POST /sandbox/{id}/fork``: the copy's name (unique per tenant; default its id)."""

    name: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )


class CreateSecret(Body):
    """``POST /secret``: Daytona's CreateSecret (``hosts`` are required here)."""

    name: str = Field(min_length=1, max_length=64)
    value: str = Field(min_length=1, max_length=8192, repr=False)
    description: str | None = Field(default=None, max_length=1024)
    hosts: list[str] | None = Field(default=None, max_length=32)


class UpdateSecret(Body):
    """``PATCH /secret/{id}``: what to change; left-out fields are kept."""

    value: str | None = Field(default=None, min_length=1, max_length=8192, repr=False)
    description: str | None = Field(default=None, max_length=1024)
    hosts: list[str] | None = Field(default=None, max_length=32)


class ResizeSandbox(Body):
    """CPUs and GiB, as Daytona counts them."""

    cpu: int | None = Field(default=None, ge=1, le=64)
    memory: int | None = Field(default=None, ge=1, le=256)
    disk: int | None = Field(default=None, ge=1, le=1024)


class Labels(Body):
    labels: dict[str, str] = Field(max_length=64)


class CreateVolume(Body):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9._-]*$")


class SandboxSnapshot(Body):
    """``POST /sandbox/{id}/snapshot``: the new snapshot's name."""

    name: str = Field(min_length=1, max_length=63)
    include_memory: bool | None = Field(default=None, alias="includeMemory")


class CreateSnapshot(Body):
    """``POST /snapshots``: a name and an image (a template name, or a rendered Dockerfile)."""

    name: str = Field(min_length=1, max_length=63)
    image_name: str | None = Field(default=None, alias="imageName", min_length=1, max_length=256)
    entrypoint: list[str] | None = None
    cpu: int | None = None
    gpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    build_info: BuildInfo | None = Field(default=None, alias="buildInfo")

"""Volumes: named, size-limited disks that outlive sandboxes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ._base import Request, Result

VolumeName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]


class CreateVolume(Request):
    name: VolumeName
    size_mb: int = Field(default=1024, ge=16, le=1048576)


class VolumeInfo(Result):
    name: str
    size_mb: int
    created_at: float
    owner: str | None = None
    mounted_by: list[str] = Field(default_factory=list)


class VolumePage(Result):
    items: list[VolumeInfo]
    next_cursor: str | None = None

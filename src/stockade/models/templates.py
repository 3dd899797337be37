"""Templates: the images sandboxes start from."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ._base import Result


class TemplateInfo(Result):
    name: str
    parent: str | None = None
    size_bytes: int
    files: int
    created: str
    owner: str | None = Field(default=None, description="the tenant that made it; null: shared")
    source: str | None = None
    config: dict[str, Any] | None = Field(
        default=None, description="env, workdir and user that processes of its sandboxes get")


class TemplatePage(Result):
    items: list[TemplateInfo]
    next_cursor: str | None = None

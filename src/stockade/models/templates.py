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
        default=None, description="env, workdir and user that processes of its sandboxes get"
    )


class TemplatePage(Result):
    items: list[TemplateInfo]
    next_cursor: str | None = None


class BuildLog(Result):
    """One line of a background build's log."""

    at: float = Field(description="unix time")
    level: str = Field(description="info or error")
    message: str


class BuildStatus(Result):
    """A background template build (``engine.templates.start_build``) as polled."""

    build_id: str
    template: str
    owner: str | None = None
    status: str = Field(description="building, ready or error")
    logs: list[BuildLog] = Field(default_factory=list, description="from the asked offset")
    error: str | None = None

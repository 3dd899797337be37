"""Paths and file entries inside a sandbox."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from ._base import Result


def check_path(path: str) -> str:
    """Refuse what can only be an attempt to walk out of a directory: '..' segments, NUL."""
    if "\x00" in path:
        raise ValueError("a path may not contain NUL bytes")
    if ".." in path.split("/"):
        raise ValueError(f"path {path!r} has a '..' segment; give the path without it")
    return path


SandboxPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(check_path)]


class EntryInfo(Result):
    """A file, directory or symlink, as the agent inside the sandbox sees it."""

    name: str
    path: str
    type: str  # "file", "dir", "symlink" or "other"
    size: int
    mode: int
    permissions: str
    owner: str
    group: str
    modified_time: float
    symlink_target: str | None = None


class MakeDirResult(Result):
    created: bool  # False: it already existed
    entry: EntryInfo

"""Toolbox git calls that change configuration, remotes, the index and the working tree
(``/git/config``, ``/git/config/user``, ``/git/remotes``, ``/git/reset``, ``/git/restore``), run
like every git call: the sandbox's own ``git`` with argv, as its user."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import Field

from ._base import TOOLBOX, ControlDep, DaytonaError, DaytonaRoute, ToolboxSandbox
from .git import PathQ, RepoRequest, git, ref
from .wire import Body

router = APIRouter(prefix=TOOLBOX + "/{sandboxId}/git", route_class=DaytonaRoute, tags=["daytona toolbox"])
Scope = Literal["global", "local", "system"]
KEY = r"^[A-Za-z][A-Za-z0-9-]*(\.[^\s=]+)*\.[A-Za-z][A-Za-z0-9-]*$"


def _scope(scope: Scope | None, path: str | None) -> tuple[str | None, str]:
    """The repository to run in and git's scope flag (local needs a path)."""
    if scope == "local" and not path:
        raise DaytonaError(400, "scope 'local' needs the repository's path")
    return (path if scope == "local" else None), f"--{scope or 'global'}"


class ConfigRequest(Body):
    key: str = Field(min_length=1, max_length=255, pattern=KEY)
    value: str = Field(max_length=4096)
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    scope: Scope | None = None


class UserRequest(Body):
    name: str = Field(min_length=1, max_length=255)
    email: str = Field(min_length=1, max_length=255)
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    scope: Scope | None = None


class AddRemote(RepoRequest):
    name: str = Field(min_length=1, max_length=255)
    url: str = Field(min_length=1, max_length=4096)
    fetch: bool | None = None
    overwrite: bool | None = None


class ResetRequest(RepoRequest):
    mode: Literal["soft", "mixed", "hard", "merge", "keep"] | None = None
    target: str | None = Field(default=None, min_length=1, max_length=255)
    files: list[str] | None = Field(default=None, max_length=10000)


class RestoreRequest(RepoRequest):
    files: list[str] = Field(min_length=1, max_length=10000)
    source: str | None = Field(default=None, min_length=1, max_length=255)
    staged: bool | None = None
    worktree: bool | None = None


@router.post("/config")
async def set_config(body: ConfigRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    path, flag = _scope(body.scope, body.path)
    await git(ctl.engine, sandbox, path, "config", flag, "--", body.key, body.value)
    return Response(status_code=200)


@router.get("/config")
async def get_config(
    sandbox: ToolboxSandbox,
    ctl: ControlDep,
    key: Annotated[str, Query(min_length=1, max_length=255, pattern=KEY)],
    path: Annotated[str | None, Query(max_length=4096)] = None,
    scope: Scope | None = None,
) -> dict[str, str | None]:
    """The key's value, null when it is not set."""
    repo, flag = _scope(scope, path)
    value = await git(ctl.engine, sandbox, repo, "config", flag, "--get", "--", key, allow=(0, 1))
    return {"value": value.rstrip("\n") or None}


@router.post("/config/user")
async def configure_user(body: UserRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    path, flag = _scope(body.scope, body.path)
    for key, value in (("user.name", body.name), ("user.email", body.email)):
        await git(ctl.engine, sandbox, path, "config", flag, "--", key, value)
    return Response(status_code=200)


@router.get("/remotes")
async def list_remotes(
    sandbox: ToolboxSandbox, ctl: ControlDep, path: PathQ
) -> dict[str, list[dict[str, str]]]:
    text = await git(ctl.engine, sandbox, path, "remote", "-v")
    remotes: dict[str, str] = {}
    for line in text.splitlines():
        name, _, rest = line.partition("\t")
        remotes.setdefault(name, rest.rsplit(" (", 1)[0])
    return {"remotes": [{"name": n, "url": u} for n, u in remotes.items()]}


@router.post("/remotes")
async def add_remote(body: AddRemote, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    """Add the remote (``overwrite``: replace one of that name); ``fetch`` fetches it."""
    name = ref(body.name)
    if body.overwrite:
        await git(ctl.engine, sandbox, body.path, "remote", "remove", name, allow=(0, 2))
    await git(
        ctl.engine, sandbox, body.path, "remote", "add", *(["-f"] if body.fetch else []), "--", name, body.url
    )
    return Response(status_code=200)


@router.post("/reset")
async def reset(body: ResetRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    """Reset HEAD (or ``target``), or only ``files`` in the index."""
    target = ref(body.target) if body.target else "HEAD"
    if body.files:
        if body.mode not in (None, "mixed"):
            raise DaytonaError(400, f"mode {body.mode!r} cannot be used with files")
        await git(ctl.engine, sandbox, body.path, "reset", "-q", target, "--", *body.files)
    else:
        await git(ctl.engine, sandbox, body.path, "reset", "-q", f"--{body.mode or 'mixed'}", target, "--")
    return Response(status_code=200)


@router.post("/restore")
async def restore(body: RestoreRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    args: list[Any] = ["restore"]
    if body.source:
        args.append(f"--source={ref(body.source)}")
    args += [*(["--staged"] if body.staged else []), *(["--worktree"] if body.worktree else [])]
    await git(ctl.engine, sandbox, body.path, *args, "--", *body.files)
    return Response(status_code=200)

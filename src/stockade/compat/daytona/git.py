"""Toolbox git (``/git/...``): the sandbox's own ``git``, run as its user with argv (no shell),
so paths, messages and URLs are never parsed by anything but git. Credentials given with a call
reach git through ``GIT_ASKPASS`` for that one call and are never written to the repository."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field

from ...engine import Engine
from .argv import run
from ._base import TOOLBOX, ControlDep, DaytonaError, DaytonaRoute, ToolboxSandbox
from .files import path_of
from .wire import Body

router = APIRouter(prefix=TOOLBOX + "/{sandboxId}/git", route_class=DaytonaRoute, tags=["daytona toolbox"])
PathQ = Annotated[str, Query(min_length=1, max_length=4096)]
Text = Field(min_length=1, max_length=4096)
#: Answers git's username and password prompts from the call's environment.
ASKPASS = (
    'case "$1" in Username*) printf "%s\\n" "$DAYTONA_GIT_USERNAME";; '
    '*) printf "%s\\n" "$DAYTONA_GIT_PASSWORD";; esac'
)
ASKPASS_PATH = "/tmp/.daytona-askpass"
STATUS = {
    " ": "Unmodified",
    "?": "Untracked",
    "M": "Modified",
    "A": "Added",
    "D": "Deleted",
    "R": "Renamed",
    "C": "Copied",
    "U": "Updated but unmerged",
    "T": "Modified",
}


async def git(
    eng: Engine,
    sandbox: str,
    path: str | None,
    *args: str,
    credentials: tuple[str | None, str | None] = (None, None),
    allow: tuple[int, ...] = (0,),
) -> str:
    """Run ``git [-C path] args``; its stdout, or a 400 with what git said (unless its exit
    code is one of ``allow``)."""
    env = {"GIT_TERMINAL_PROMPT": "0"}
    argv = ["git", *(["-C", path_of(path)] if path else []), *args]
    username, password = credentials
    if username is not None or password is not None:
        env.update(
            {
                "DAYTONA_GIT_USERNAME": username or "",
                "DAYTONA_GIT_PASSWORD": password or "",
                "GIT_ASKPASS": ASKPASS_PATH,
            }
        )
        await _askpass(eng, sandbox)
    verb = next((a for a in args if not a.startswith("-") and "=" not in a), "")
    return await run(eng, sandbox, argv, f"git {verb}", env=env, allow=allow)


async def _askpass(eng: Engine, sandbox: str) -> None:
    async def body() -> Any:
        yield ("#!/bin/sh\n" + ASKPASS + "\n").encode()

    await eng.files.write(sandbox, ASKPASS_PATH, body(), mode=0o700)


class CloneRequest(Body):
    url: str = Text
    path: str = Text
    branch: str | None = Field(default=None, max_length=255)
    commit_id: str | None = Field(default=None, max_length=64, pattern=r"^[0-9a-fA-F]+$")
    depth: int | None = Field(default=None, ge=1)
    username: str | None = Field(default=None, max_length=1024)
    password: str | None = Field(default=None, max_length=8192)


class RepoRequest(Body):
    path: str = Text


class InitRequest(RepoRequest):
    bare: bool | None = None
    initial_branch: str | None = Field(default=None, max_length=255)


class BranchRequest(RepoRequest):
    name: str = Field(min_length=1, max_length=255)


class CheckoutRequest(RepoRequest):
    branch: str = Field(min_length=1, max_length=255)


class AddRequest(RepoRequest):
    files: list[str] = Field(min_length=1, max_length=10000)


class CommitRequest(RepoRequest):
    message: str = Field(min_length=1, max_length=1 << 16)
    author: str = Field(min_length=1, max_length=255)
    email: str = Field(min_length=1, max_length=255)
    allow_empty: bool | None = None


class RemoteRequest(RepoRequest):
    username: str | None = Field(default=None, max_length=1024)
    password: str | None = Field(default=None, max_length=8192)
    remote: str | None = Field(default=None, max_length=255)
    branch: str | None = Field(default=None, max_length=255)
    set_upstream: bool | None = None

    def target(self) -> list[str]:
        """``[remote [branch]]`` as git takes them."""
        if self.branch and not self.remote:
            return ["origin", ref(self.branch)]
        return [ref(r) for r in (self.remote, self.branch) if r]


def ref(name: str) -> str:
    if name.startswith("-"):
        raise DaytonaError(400, f"{name!r} is not a branch name")
    return name


@router.post("/clone")
async def clone(body: CloneRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    args = ["clone"]
    if body.branch:
        args += ["--branch", ref(body.branch)]
    if body.depth:
        args += ["--depth", str(body.depth)]
    await git(
        ctl.engine,
        sandbox,
        None,
        *args,
        "--",
        body.url,
        path_of(body.path),
        credentials=(body.username, body.password),
    )
    if body.commit_id:
        await git(ctl.engine, sandbox, body.path, "checkout", body.commit_id)
    return Response(status_code=200)


@router.post("/init")
async def init(body: InitRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    args = [
        "init",
        *(["--bare"] if body.bare else []),
        *(["--initial-branch", ref(body.initial_branch)] if body.initial_branch else []),
    ]
    await git(ctl.engine, sandbox, None, *args, path_of(body.path))
    return Response(status_code=200)


@router.get("/status")
async def status(sandbox: ToolboxSandbox, ctl: ControlDep, path: PathQ) -> dict[str, Any]:
    """Branch, ahead/behind and each changed file (``git status --porcelain``)."""
    text = await git(ctl.engine, sandbox, path, "status", "--porcelain=v1", "-b", "-z")
    entries = text.split("\0")
    head = entries[0][3:] if entries and entries[0].startswith("## ") else ""
    branch, _, tracking = head.partition("...")
    ahead = behind = 0
    if "[" in tracking:
        for part in tracking[tracking.index("[") + 1 :].rstrip("]").split(","):
            word, _, count = part.strip().partition(" ")
            if word == "ahead":
                ahead = int(count)
            elif word == "behind":
                behind = int(count)
    files = []
    rest = iter(entries[1:])
    for entry in rest:
        if len(entry) < 4:
            continue
        x, y, name = entry[0], entry[1], entry[3:]
        if x in "RC":
            next(rest, None)  # the rename's source path
        files.append(
            {
                "name": name,
                "staging": STATUS.get("?" if x == "?" else x, "Modified"),
                "worktree": STATUS.get(y, "Modified"),
                "extra": "",
            }
        )
    return {
        "currentBranch": branch.replace("No commits yet on ", "").split(" ")[0],
        "fileStatus": files,
        "ahead": ahead,
        "behind": behind,
        "branchPublished": bool(tracking),
    }


@router.get("/branches")
async def branches(sandbox: ToolboxSandbox, ctl: ControlDep, path: PathQ) -> dict[str, Any]:
    text = await git(ctl.engine, sandbox, path, "branch", "--format=%(refname:short)")
    return {"branches": [b for b in text.splitlines() if b]}


@router.post("/branches", status_code=201)
async def create_branch(body: BranchRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    await git(ctl.engine, sandbox, body.path, "branch", ref(body.name))
    return Response(status_code=201)


@router.delete("/branches", status_code=204)
async def delete_branch(body: BranchRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    await git(ctl.engine, sandbox, body.path, "branch", "-D", ref(body.name))
    return Response(status_code=204)


@router.post("/checkout")
async def checkout(body: CheckoutRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    await git(ctl.engine, sandbox, body.path, "checkout", ref(body.branch))
    return Response(status_code=200)


@router.post("/add")
async def add(body: AddRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    await git(ctl.engine, sandbox, body.path, "add", "--", *body.files)
    return Response(status_code=200)


@router.post("/commit")
async def commit(body: CommitRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, str]:
    """Commit the index as ``author <email>``; answers the full commit id."""
    await git(
        ctl.engine,
        sandbox,
        body.path,
        "-c",
        f"user.name={body.author}",
        "-c",
        f"user.email={body.email}",
        "commit",
        "-q",
        "-m",
        body.message,
        *(["--allow-empty"] if body.allow_empty else []),
    )
    return {"hash": (await git(ctl.engine, sandbox, body.path, "rev-parse", "HEAD")).strip()}


@router.post("/push")
async def push(body: RemoteRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    await git(
        ctl.engine,
        sandbox,
        body.path,
        "push",
        *(["--set-upstream"] if body.set_upstream else []),
        *body.target(),
        credentials=(body.username, body.password),
    )
    return Response(status_code=200)


@router.post("/pull")
async def pull(body: RemoteRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    await git(
        ctl.engine, sandbox, body.path, "pull", *body.target(), credentials=(body.username, body.password)
    )
    return Response(status_code=200)

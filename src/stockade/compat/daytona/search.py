"""Toolbox find, search and replace (``files/find``, ``files/search``, ``files/replace``): one
small Python program run in the sandbox as its user, answering JSON."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from ...models import ProcessSpec
from ._base import TOOLBOX, ControlDep, DaytonaError, FileRoute, ToolboxSandbox
from .files import path_of
from .process import run
from .wire import Body

router = APIRouter(prefix=TOOLBOX + "/{sandboxId}/files", route_class=FileRoute, tags=["daytona toolbox"])
PathQ = Annotated[str, Query(min_length=1, max_length=4096)]
PatternQ = Annotated[str, Query(min_length=1, max_length=4096)]
#: The most matches or names one call returns.
LIMIT = 10000
PROGRAM = r"""
import fnmatch, json, os, sys
what, root, pattern, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = []
def walk(root):
    if os.path.isfile(root):
        yield root
        return
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            yield os.path.join(d, f)
if what == "find":
    for path in walk(root):
        try:
            with open(path, "rb") as f:
                data = f.read(64 << 20)
        except OSError:
            continue
        if b"\0" in data[:8192]:
            continue
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if pattern in line:
                out.append({"file": path, "line": n, "content": line[:4096]})
        if len(out) >= limit:
            break
elif what == "search":
    for path in walk(root):
        if fnmatch.fnmatch(os.path.basename(path), pattern):
            out.append(path)
            if len(out) >= limit:
                break
else:
    new = sys.argv[5]
    for path in sys.argv[6:]:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace(pattern, new))
            out.append({"file": path, "success": True})
        except (OSError, UnicodeDecodeError) as e:
            out.append({"file": path, "success": False, "error": str(e)})
print(json.dumps(out))
"""


async def _program(ctl: ControlDep, sandbox: str, *args: str) -> Any:
    output, end = await run(ctl.engine, sandbox, ProcessSpec(argv=["python3", "-c", PROGRAM, *args]))
    if end.get("exit_code") != 0:
        raise DaytonaError(400, f"{args[0]} failed: {output.strip()[-500:]}", "INVALID_FILE_PATH")
    return json.loads(output)


@router.get("/find")
async def find_in_files(
    sandbox: ToolboxSandbox, ctl: ControlDep, path: PathQ, pattern: PatternQ
) -> list[dict[str, Any]]:
    """Lines holding ``pattern`` (plain text) in the text files under ``path``."""
    return list(await _program(ctl, sandbox, "find", path_of(path), pattern, str(LIMIT)))


@router.get("/search")
async def search_files(
    sandbox: ToolboxSandbox, ctl: ControlDep, path: PathQ, pattern: PatternQ
) -> dict[str, Any]:
    """Files under ``path`` whose name matches the glob ``pattern``."""
    return {"files": await _program(ctl, sandbox, "search", path_of(path), pattern, str(LIMIT))}


class ReplaceRequest(Body):
    files: list[str] = Field(min_length=1, max_length=LIMIT)
    pattern: str = Field(min_length=1, max_length=1 << 16)
    new_value: str = Field(alias="newValue", max_length=1 << 20)


@router.post("/replace")
async def replace_in_files(
    body: ReplaceRequest, sandbox: ToolboxSandbox, ctl: ControlDep
) -> list[dict[str, Any]]:
    """Replace every occurrence of ``pattern`` (plain text) in each file; one result each."""
    files = [path_of(f) for f in body.files]
    return list(
        await _program(ctl, sandbox, "replace", "/", body.pattern, str(LIMIT), body.new_value, *files)
    )

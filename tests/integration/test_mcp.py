"""The MCP server, driven by the official ``mcp`` client: streamable HTTP at ``/mcp`` on a
real ``stockade serve`` (tenant keys) and ``stockade mcp`` over stdio, both against real
sandboxes."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
from typing import Any, AsyncIterator, Iterator

import httpx
import httpx2
import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import CallToolResult, ImageContent, TextContent

from server_harness import STOCKADE, Server, sqlite_server  # noqa: F401

pytestmark = [pytest.mark.root, pytest.mark.slow]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]); plt.show()\nprint('plotted')"


@pytest.fixture(scope="module")
def keys(sqlite_server: Server) -> Iterator[dict[str, str]]:  # noqa: F811
    yield {"acme": sqlite_server.new_key("acme"), "globex": sqlite_server.new_key("globex")}


@contextlib.asynccontextmanager
async def http_session(server: Server, key: str) -> AsyncIterator[ClientSession]:
    client = create_mcp_http_client(
        headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=300)
    )
    async with client, streamable_http_client(server.url + "/mcp", http_client=client) as (r, w):
        async with ClientSession(r, w) as session:
            await session.initialize()
            yield session


def texts(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


async def call(session: ClientSession, tool: str, **arguments: Any) -> CallToolResult:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, texts(result)
    return result


def sandbox_ids(server: Server, key: str) -> set[str]:
    with server.client(key) as c:
        return {s["id"] for s in c.get("/sandboxes").json()["items"]}


async def test_http_sandbox_code_command_files_kill(
    sqlite_server: Server,  # noqa: F811
    keys: dict[str, str],
) -> None:
    async with http_session(sqlite_server, keys["acme"]) as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert {
            "create_sandbox",
            "run_code",
            "run_command",
            "read_file",
            "write_file",
            "list_files",
            "kill_sandbox",
            "list_sandboxes",
        } <= names
        info = json.loads(
            texts(await call(s, "create_sandbox", template="code-interpreter", tier="container", timeout=300))
        )
        sid = info["id"]
        assert info["state"] == "running" and info["network"] == "none"
        assert sid in sandbox_ids(sqlite_server, keys["acme"])  # the key's tenant owns it
        assert sid not in sandbox_ids(sqlite_server, keys["globex"])

        run = await call(s, "run_code", sandbox_id=sid, code=PLOT)
        images = [b for b in run.content if isinstance(b, ImageContent)]
        assert len(images) == 1 and images[0].mime_type == "image/png"
        assert base64.b64decode(images[0].data).startswith(PNG_MAGIC)
        assert "plotted" in texts(run)
        await call(s, "run_code", sandbox_id=sid, code="x = 6 * 7")
        assert "42" in texts(await call(s, "run_code", sandbox_id=sid, code="x"))  # state kept

        cmd = await call(s, "run_command", sandbox_id=sid, command="echo hi; id -un; exit 0")
        assert "hi\nuser" in texts(cmd)
        failed = await s.call_tool("run_command", {"sandbox_id": sid, "command": "exit 3"})
        assert failed.is_error and "exit code: 3" in texts(failed)

        await call(s, "write_file", sandbox_id=sid, path="/home/user/d/notes.txt", content="über\n")
        assert texts(await call(s, "read_file", sandbox_id=sid, path="/home/user/d/notes.txt")) == "über\n"
        assert "/home/user/d/notes.txt" in texts(
            await call(s, "list_files", sandbox_id=sid, path="/home/user", depth=2)
        )
        assert sid in texts(await call(s, "list_sandboxes"))

        with sqlite_server.client(keys["acme"]) as c:  # a paused sandbox is resumed for a tool
            assert c.post(f"/sandboxes/{sid}/pause").json()["state"] == "paused"
        assert "x=42" in texts(await call(s, "run_code", sandbox_id=sid, code="print(f'{x=}')"))
        with sqlite_server.client(keys["acme"]) as c:
            assert c.get(f"/sandboxes/{sid}").json()["state"] == "running"

        await call(s, "kill_sandbox", sandbox_id=sid)
    assert sid not in sandbox_ids(sqlite_server, sqlite_server.admin_key or "")


async def test_http_refuses_missing_and_wrong_keys(sqlite_server: Server) -> None:  # noqa: F811
    for headers in ({}, {"Authorization": "Bearer sk_000000000000_" + "x" * 43}):
        r = httpx.post(
            sqlite_server.url + "/mcp",
            headers={**headers, "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        )
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    with pytest.raises(ExceptionGroup) as refused:  # the client cannot even initialize
        async with http_session(sqlite_server, "sk_wrong_" + "y" * 40):
            pass
    assert refused.group_contains(MCPError, match="error response", depth=None)


async def test_http_other_tenant_sandbox_is_invisible(
    sqlite_server: Server,  # noqa: F811
    keys: dict[str, str],
) -> None:
    with sqlite_server.client(keys["acme"]) as c:
        sid = c.post("/sandboxes", json={"timeout": 120}).json()["id"]
    try:
        async with http_session(sqlite_server, keys["globex"]) as s:
            for tool, args in (
                ("kill_sandbox", {}),
                ("run_command", {"command": "true"}),
                ("read_file", {"path": "/etc/hostname"}),
            ):
                result = await s.call_tool(tool, {"sandbox_id": sid, **args})
                assert result.is_error and "does not exist" in texts(result), texts(result)
        assert sid in sandbox_ids(sqlite_server, keys["acme"])  # untouched
    finally:
        with sqlite_server.client(keys["acme"]) as c:
            c.delete(f"/sandboxes/{sid}")


async def test_http_garbage_arguments_get_clear_errors(
    sqlite_server: Server,  # noqa: F811
    keys: dict[str, str],
) -> None:
    async with http_session(sqlite_server, keys["acme"]) as s:
        cases = [
            ("kill_sandbox", {"sandbox_id": "../../keys"}, "sandbox_id"),
            ("run_code", {"code": ""}, "code"),
            ("run_code", {"code": "1", "timeout": "soon"}, "timeout"),
            ("create_sandbox", {"tier": "vmware"}, "tier"),
            ("create_sandbox", {"network": {"allow_out": "everything"}}, "allow_out"),
            ("read_file", {"sandbox_id": "sb1", "path": "relative/path"}, "path"),
            ("write_file", {"sandbox_id": "sb1"}, "path"),
            ("list_files", {"sandbox_id": "sb1", "depth": 10**9}, "depth"),
            ("create_sandbox", {"template": "no-such-template"}, "no-such-template"),
            ("kill_sandbox", {"sandbox_id": "sbdoesnotexist"}, "does not exist"),
        ]
        for tool, args, words in cases:
            result = await s.call_tool(tool, args)
            assert result.is_error, (tool, args)
            assert words in texts(result), (tool, args, texts(result))
        unknown = await s.call_tool("format_disk", {})
        assert unknown.is_error and "format_disk" in texts(unknown)
        ok = await call(s, "run_command", command="echo still-up")  # one-shot sandbox
        assert "still-up" in texts(ok)
    assert httpx.get(sqlite_server.url + "/health").status_code == 200
    assert not sandbox_ids(sqlite_server, keys["acme"])  # the one-shot sandbox is gone


async def test_stdio_one_shot_code_and_command(
    sqlite_server: Server,  # noqa: F811
    keys: dict[str, str],
) -> None:
    params = StdioServerParameters(
        command=STOCKADE,
        args=["mcp"],
        env={
            "STOCKADE_API_URL": sqlite_server.url,
            "STOCKADE_API_KEY": keys["globex"],
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        },
    )
    async with stdio_client(params, errlog=sys.stderr) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            run = await call(s, "run_code", code=PLOT + "\nprint(sum(range(10)))")
            assert any(isinstance(b, ImageContent) for b in run.content)
            assert "45" in texts(run)
            err = await s.call_tool("run_code", {"code": "1/0"})
            assert err.is_error and "ZeroDivisionError" in texts(err)
            assert "Linux" in texts(await call(s, "run_command", command="uname -s"))
            bad = await s.call_tool("run_command", {"command": 42})
            assert bad.is_error and "command" in texts(bad)
    assert not sandbox_ids(sqlite_server, keys["globex"])  # one-shot sandboxes are removed

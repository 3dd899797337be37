"""docs/mcp.md, taken literally: every JSON host configuration on that page, with only the
placeholders the page names filled in, is used the way an MCP host uses it (the official
``mcp`` client: stdio for ``command``, streamable HTTP for ``url``) to run Python in a real
sandbox of a real ``stockade serve``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import TextContent

from server_harness import STOCKADE, Server, sqlite_server  # noqa: F401

pytestmark = [pytest.mark.root, pytest.mark.slow]
DOC = Path(__file__).resolve().parents[2] / "docs" / "mcp.md"
#: Where the install lives: the directory holding .venv/bin/stockade.
CHECKOUT = str(Path(STOCKADE).parent.parent.parent)


def doc_configs() -> list[dict[str, Any]]:
    """Every ```json block of docs/mcp.md, parsed as written."""
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)
    return [json.loads(block) for block in blocks]


def servers(config: dict[str, Any]) -> dict[str, Any]:
    """The server entries, under ``mcpServers`` (most hosts) or ``servers`` (VS Code)."""
    found = config.get("mcpServers", config.get("servers"))
    assert isinstance(found, dict) and found, f"no servers in {config}"
    return found


def filled(config: dict[str, Any], url: str, key: str) -> dict[str, Any]:
    """The configuration with the page's placeholders replaced, and nothing else."""
    text = (
        json.dumps(config)
        .replace("/path/to/stockade", CHECKOUT)
        .replace("http://127.0.0.1:8800", url)
        .replace("sk_YOUR_KEY", key)
    )
    return dict(json.loads(text))


@contextlib.asynccontextmanager
async def host_session(entry: dict[str, Any]) -> AsyncIterator[ClientSession]:
    """Connect as a host does with one configured server entry."""
    if "command" in entry:
        assert entry.get("type", "stdio") == "stdio"
        env = dict(entry.get("env", {}))
        if os.environ.get("PYTHONPATH"):  # the code under test, as for every child the tests start
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        params = StdioServerParameters(command=entry["command"], args=entry.get("args", []), env=env)
        async with stdio_client(params, errlog=sys.stderr) as (r, w):
            async with ClientSession(r, w) as session:
                yield session
        return
    assert entry["type"] == "http", entry
    client = create_mcp_http_client(headers=entry.get("headers", {}), timeout=httpx2.Timeout(30, read=300))
    async with client, streamable_http_client(entry["url"], http_client=client) as (r, w):
        async with ClientSession(r, w) as session:
            yield session


@pytest.fixture(scope="module")
def key(sqlite_server: Server) -> Iterator[str]:  # noqa: F811
    yield sqlite_server.new_key("docs-reader")


def test_the_page_has_stdio_and_http_for_both_config_shapes() -> None:
    entries = [
        (shape, entry)
        for config in doc_configs()
        for shape in ("mcpServers", "servers")
        if shape in config
        for entry in servers(config).values()
    ]
    kinds = {(shape, "stdio" if "command" in e else "http") for shape, e in entries}
    assert kinds == {
        ("mcpServers", "stdio"),
        ("mcpServers", "http"),
        ("servers", "stdio"),
        ("servers", "http"),
    }


async def test_every_configuration_on_the_page_runs_python(
    sqlite_server: Server,  # noqa: F811
    key: str,
) -> None:
    configs = doc_configs()
    assert configs
    for config in configs:
        for name, entry in servers(filled(config, sqlite_server.url, key)).items():
            assert name == "stockade"
            async with host_session(entry) as session:
                await session.initialize()
                result = await session.call_tool(
                    "run_code", {"code": "import os, sys\nprint(sys.version_info[0], os.getuid())"}
                )
                text = "\n".join(b.text for b in result.content if isinstance(b, TextContent))
                assert not result.is_error, text
                assert re.search(r"^3 1000$", text, re.M), text  # Python 3, as the sandbox's user
    with sqlite_server.client(key) as c:  # the one-shot sandboxes are gone
        assert c.get("/sandboxes").json()["items"] == []
        events = c.get("/audit", params={"limit": 1000}).json()["items"]
    created = [e for e in events if e["action"] == "sandbox.create"]
    assert len(created) == 4, events  # each configuration really reached the server

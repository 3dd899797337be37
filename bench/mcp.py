"""What the MCP layer adds: ``python -m bench.mcp``.

On one running sandbox of a real ``stockade serve`` (loopback, tenant key), interleaved so
both paths see the same machine load, median of 30 each:

- ``run_command("true")`` through MCP over streamable HTTP (``mcp`` client -> ``/mcp`` -> the
  SDK calling the server back) vs ``sandbox.commands.run("true")`` through the SDK directly;
- ``read_file`` of a small file, the same two ways;
- and, to split the difference, the SDK doing what a tool call does: a new client, ``get``
  the sandbox, run, close.

The MCP path adds a JSON-RPC round trip, a new SDK connection per tool call (a ``connect`` to
the sandbox, then the call) and the loopback hop back into the server.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from stockade.sdk import AsyncSandbox

from ._common import machine, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from server_harness import Server  # noqa: E402

N = 30


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def main() -> None:
    server = Server(
        Path(tempfile.mkdtemp(prefix="stockade-bench-mcp-", dir="/var/tmp")), STOCKADE_POOL_SIZE="0"
    ).start()
    try:
        key = server.new_key("bench")
        sb = await AsyncSandbox.create(api_url=server.url, api_key=key, timeout=600)
        await sb.files.write("/home/user/small.txt", "x" * 1000)
        client = create_mcp_http_client(
            headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=300)
        )
        async with (
            client,
            streamable_http_client(server.url + "/mcp", http_client=client) as (r, w),
            ClientSession(r, w) as session,
        ):
            await session.initialize()

            async def fresh_cmd() -> object:  # what each tool call does through the SDK
                again = await AsyncSandbox.get(sb.id, api_url=server.url, api_key=key)
                try:
                    return await again.commands.run("true")
                finally:
                    await again.close()

            calls = {
                "sdk_cmd": lambda: sb.commands.run("true"),
                "fresh_cmd": fresh_cmd,
                "mcp_cmd": lambda: session.call_tool("run_command", {"sandbox_id": sb.id, "command": "true"}),
                "sdk_read": lambda: sb.files.read("/home/user/small.txt"),
                "mcp_read": lambda: session.call_tool(
                    "read_file", {"sandbox_id": sb.id, "path": "/home/user/small.txt"}
                ),
            }
            for name, call in calls.items():  # warm up (the first /mcp call imports mcp)
                await call()
            samples: dict[str, list[float]] = {k: [] for k in calls}
            for _ in range(N):
                for name, call in calls.items():
                    start = time.perf_counter()
                    result = await call()
                    samples[name].append(time.perf_counter() - start)
                    assert not getattr(result, "is_error", False), result
        await sb.kill()
        m = {k: statistics.median(v) for k, v in samples.items()}
        print(machine())
        table(
            [
                ("measure (median of 30)", "SDK", "SDK, new client per call", "MCP over HTTP", "MCP / SDK"),
                (
                    "run_command('true')",
                    ms(m["sdk_cmd"]),
                    ms(m["fresh_cmd"]),
                    ms(m["mcp_cmd"]),
                    f"{m['mcp_cmd'] / m['sdk_cmd']:.2f}x",
                ),
                (
                    "read_file (1 kB)",
                    ms(m["sdk_read"]),
                    "",
                    ms(m["mcp_read"]),
                    f"{m['mcp_read'] / m['sdk_read']:.2f}x",
                ),
            ]
        )
    finally:
        server.kill_all_sandboxes()
        server.stop()
        subprocess.run(["rm", "-rf", str(server.data_dir)], check=False)


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()

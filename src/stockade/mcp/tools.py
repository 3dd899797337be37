"""The MCP tools: create a sandbox, run code or a command, read, write and list files, kill,
list sandboxes. Every tool is a few SDK calls; every argument is validated by its schema.

Without ``sandbox_id``, ``run_code`` and ``run_command`` create a sandbox, run, and kill it,
so a one-shot "run this" needs no sandbox management.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator, Callable, Iterator, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from ..sdk import AsyncSandbox, CommandTimeout, ExecutionTimeout, StockadeError
from . import render

INSTRUCTIONS = """Run code in isolated Stockade sandboxes. For a one-off, call run_code (Python
or bash) or run_command without a sandbox_id: a fresh sandbox is made and removed. To keep
state (files, variables, installed tools) across calls, create_sandbox first and pass its id;
kill_sandbox when done (it also dies at its timeout). Charts shown with matplotlib come back
as images. Sandboxes have no network unless created with one."""

SandboxId = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a sandbox id from create_sandbox or list_sandboxes"),
]
Path = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        pattern=r"^/[^\x00]*$",
        description="an absolute path inside the sandbox",
    ),
]
Tier = Literal["container", "gvisor", "microvm"]
Timeout = Annotated[float, Field(ge=1, le=3600)]


class Network(BaseModel):
    """Egress allowed out of the sandbox; everything else is denied."""

    model_config = ConfigDict(extra="forbid")
    allow_out: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=256,
        description="host names (*.example.com wildcards) and CIDRs the sandbox may reach",
    )
    deny_out: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=256, description="CIDRs refused even if allowed above"
    )


@dataclass(frozen=True)
class Target:
    """Which Stockade server the tools talk to and with which key (None: the SDK's own
    resolution from ``STOCKADE_API_URL``/``STOCKADE_API_KEY``, else the local daemon)."""

    api_url: str | None = None
    api_key: str | None = None


Resolve = Callable[[Context], Target]


def build_server(resolve: Resolve, *, code_template: str = "code-interpreter") -> MCPServer:
    """An MCP server whose tools reach Stockade where ``resolve`` says for each call.

    ``code_template`` is the template of the sandboxes run_code makes on its own."""
    with _root_logging_kept():  # MCPServer() calls logging.basicConfig; the host owns logging
        server: MCPServer = MCPServer("stockade", instructions=INSTRUCTIONS, version="0.1.0")

    @contextlib.asynccontextmanager
    async def attached(ctx: Context, sandbox_id: str) -> AsyncIterator[AsyncSandbox]:
        target = resolve(ctx)
        async with _sdk_errors():
            sb = await AsyncSandbox.get(sandbox_id, api_url=target.api_url, api_key=target.api_key)
            if sb.info.state != "running":  # paused or stopped: bring it back (slower)
                await sb.close()
                sb = await AsyncSandbox.connect(sandbox_id, api_url=target.api_url, api_key=target.api_key)
        try:
            async with _sdk_errors():
                yield sb
        finally:
            await sb.close()

    @contextlib.asynccontextmanager
    async def one_shot(ctx: Context, template: str | None, tier: Tier) -> AsyncIterator[AsyncSandbox]:
        target = resolve(ctx)
        async with _sdk_errors():
            sb = await AsyncSandbox.create(
                template,
                isolation=tier,
                timeout=600,
                metadata={"created-by": "mcp"},
                api_url=target.api_url,
                api_key=target.api_key,
            )
            async with sb:
                yield sb

    @server.tool(structured_output=False)
    async def create_sandbox(
        ctx: Context,
        template: Annotated[
            str,
            Field(
                pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
                description="'base' (Debian, Python) or 'code-interpreter' (numpy, pandas, matplotlib)",
            ),
        ] = "base",
        tier: Annotated[
            Tier,
            Field(
                description="isolation: container (runc), gvisor (user-space kernel) or microvm (own kernel)"
            ),
        ] = "container",
        timeout: Annotated[
            float, Field(ge=1, le=86400, description="seconds before the sandbox is killed")
        ] = 600,
        network: Annotated[
            Network | None, Field(description="egress policy; omit for no network at all")
        ] = None,
    ) -> CallToolResult:
        """Create a sandbox and return its id; pass the id to the other tools."""
        target = resolve(ctx)
        async with _sdk_errors():
            sb = await AsyncSandbox.create(
                template,
                isolation=tier,
                timeout=timeout,
                metadata={"created-by": "mcp"},
                network=network.model_dump() if network is not None else "none",
                api_url=target.api_url,
                api_key=target.api_key,
            )
            await sb.close()
        return render.as_json(render.sandbox(sb.info))

    @server.tool(structured_output=False)
    async def run_code(
        ctx: Context,
        code: Annotated[str, Field(min_length=1, max_length=1_000_000)],
        sandbox_id: SandboxId | None = None,
        language: Literal["python", "bash"] = "python",
        timeout: Timeout = 120,
    ) -> CallToolResult:
        """Run a Python (or bash) cell and return its output, value, images and error.

        With sandbox_id, variables persist between calls; without, a fresh code-interpreter
        sandbox runs the cell and is removed."""
        if sandbox_id is None:
            async with one_shot(ctx, code_template, "container") as sb:
                return render.execution(await _run_cell(sb, code, language, timeout), None)
        async with attached(ctx, sandbox_id) as sb:
            return render.execution(await _run_cell(sb, code, language, timeout), sandbox_id)

    @server.tool(structured_output=False)
    async def run_command(
        ctx: Context,
        command: Annotated[
            str, Field(min_length=1, max_length=100_000, description="a shell command line (bash -c)")
        ],
        sandbox_id: SandboxId | None = None,
        cwd: Path | None = None,
        user: Literal["user", "root"] = "user",
        timeout: Timeout = 120,
    ) -> CallToolResult:
        """Run a shell command and return its exit code, stdout and stderr."""
        if sandbox_id is None:
            async with one_shot(ctx, None, "container") as sb:
                return render.command(await _run_command(sb, command, cwd, user, timeout), None)
        async with attached(ctx, sandbox_id) as sb:
            return render.command(await _run_command(sb, command, cwd, user, timeout), sandbox_id)

    @server.tool(structured_output=False)
    async def read_file(ctx: Context, sandbox_id: SandboxId, path: Path) -> CallToolResult:
        """Read a text file (undecodable bytes are replaced)."""
        async with attached(ctx, sandbox_id) as sb:
            data: bytes = await sb.files.read(path, format="bytes")
        return CallToolResult(content=[render.text(render.clip(data.decode(errors="replace")))])

    @server.tool(structured_output=False)
    async def write_file(
        ctx: Context,
        sandbox_id: SandboxId,
        path: Path,
        content: Annotated[str, Field(max_length=10_000_000)],
    ) -> CallToolResult:
        """Create or replace a file (parent directories are created)."""
        async with attached(ctx, sandbox_id) as sb:
            entry = await sb.files.write(path, content)
        return CallToolResult(content=[render.text(f"wrote {entry.size} bytes to {entry.path}")])

    @server.tool(structured_output=False)
    async def list_files(
        ctx: Context,
        sandbox_id: SandboxId,
        path: Path = "/home/user",
        depth: Annotated[int, Field(ge=1, le=5)] = 1,
    ) -> CallToolResult:
        """List a directory: type, permissions, size and path of each entry."""
        async with attached(ctx, sandbox_id) as sb:
            return render.entries(await sb.files.list(path, depth=depth))

    @server.tool(structured_output=False)
    async def kill_sandbox(ctx: Context, sandbox_id: SandboxId) -> CallToolResult:
        """Kill a sandbox and remove everything in it."""
        target = resolve(ctx)
        async with _sdk_errors():
            sb = await AsyncSandbox.get(sandbox_id, api_url=target.api_url, api_key=target.api_key)
            await sb.kill()
        return CallToolResult(content=[render.text(f"killed {sandbox_id}")])

    @server.tool(structured_output=False)
    async def list_sandboxes(
        ctx: Context,
        state: Literal["running", "paused", "stopped", "archived"] | None = None,
    ) -> CallToolResult:
        """The sandboxes this key can see, with tier, template and state."""
        target = resolve(ctx)
        async with _sdk_errors():
            found = await AsyncSandbox.list(state=state, api_url=target.api_url, api_key=target.api_key)
        return render.as_json([render.sandbox(info) for info in found])

    return server


async def _run_cell(sb: AsyncSandbox, code: str, language: str, timeout: float) -> Any:
    try:
        return await sb.run_code(code, language=language, timeout=timeout)
    except ExecutionTimeout as exc:
        raise ToolError(
            f"the cell ran past {timeout:g} s and was interrupted; "
            f"output so far: {render.clip(''.join(exc.execution.logs.stdout), 4000)}"
        )


async def _run_command(sb: AsyncSandbox, command: str, cwd: str | None, user: str, timeout: float) -> Any:
    try:
        return await sb.commands.run(command, cwd=cwd, user=user, timeout=timeout)
    except CommandTimeout:
        raise ToolError(f"the command ran past {timeout:g} s and was killed")


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level


@contextlib.asynccontextmanager
async def _sdk_errors() -> AsyncIterator[None]:
    """Stockade's own error messages (they say what to fix) as tool errors."""
    try:
        yield
    except StockadeError as exc:
        raise ToolError(str(exc)) from None

"""SDK results as MCP content: text for logs and values, images as image content."""

from __future__ import annotations

import json
from typing import Any

from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent

from ..sdk import CommandResult, EntryInfo, Execution, SandboxInfo

#: Output kept per stream in a tool result; a model cannot use megabytes of log anyway.
MAX_TEXT = 64 * 1024


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text``, cut to ``limit`` characters with a note saying how much was dropped."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def text(value: str) -> TextContent:
    return TextContent(type="text", text=value)


def sandbox(info: SandboxInfo) -> dict[str, Any]:
    """The fields of a sandbox that an agent acts on."""
    return {
        "id": info.id,
        "tier": info.isolation,
        "template": info.template,
        "state": info.state,
        "reason": info.reason,
        "network": info.network,
        "timeout": info.timeout,
        "expires_at": info.expires_at,
        "metadata": info.metadata,
    }


def as_json(value: Any) -> CallToolResult:
    return CallToolResult(content=[text(json.dumps(value, indent=1))])


def execution(run: Execution, sandbox_id: str | None) -> CallToolResult:
    """A cell's logs, results (PNG and JPEG as image content) and error."""
    blocks: list[ContentBlock] = []
    if sandbox_id:
        blocks.append(text(f"sandbox: {sandbox_id}"))
    if run.logs.stdout:
        blocks.append(text("stdout:\n" + clip("".join(run.logs.stdout))))
    if run.logs.stderr:
        blocks.append(text("stderr:\n" + clip("".join(run.logs.stderr))))
    for result in run.results:
        if result.png:
            blocks.append(ImageContent(type="image", data=result.png, mime_type="image/png"))
        elif result.jpeg:
            blocks.append(ImageContent(type="image", data=result.jpeg, mime_type="image/jpeg"))
        elif result.text is not None:
            label = "value" if result.is_main_result else "display"
            blocks.append(text(f"{label}:\n" + clip(result.text)))
    if run.error is not None:
        blocks.append(text(f"error: {run.error.name}: {run.error.value}\n" + clip(run.error.traceback)))
    if not blocks:
        blocks.append(text("(no output)"))
    return CallToolResult(content=blocks, is_error=run.error is not None)


def command(result: CommandResult, sandbox_id: str | None) -> CallToolResult:
    head = f"exit code: {result.exit_code}"
    if result.status != "exited":
        head += f" ({result.status})"
    if sandbox_id:
        head = f"sandbox: {sandbox_id}\n" + head
    blocks: list[ContentBlock] = [text(head)]
    if result.stdout:
        blocks.append(text("stdout:\n" + clip(result.stdout)))
    if result.stderr:
        blocks.append(text("stderr:\n" + clip(result.stderr)))
    return CallToolResult(content=blocks, is_error=result.exit_code != 0)


def entries(rows: list[EntryInfo]) -> CallToolResult:
    lines = [
        f"{e.type[0]} {e.permissions} {e.size:>10} {e.path}"
        + (f" -> {e.symlink_target}" if e.symlink_target else "")
        for e in rows
    ]
    return CallToolResult(content=[text("\n".join(lines) or "(empty directory)")])

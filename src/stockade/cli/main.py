"""``stockade``: run code in sandboxes from a shell."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Column, Table

from .. import Sandbox, SandboxNotFound, StockadeError
from . import code, dashboard, doctor, host, images, keys, secrets, security, server

app = typer.Typer(
    help="Run untrusted code in sandboxes: container, gVisor or microVM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(help="Manage running sandboxes.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(images.app, name="image")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(keys.tenants_app, name="tenants")
app.add_typer(secrets.app, name="secret")
app.command("serve")(server.serve)
app.add_typer(host.app, name="host")
app.command("demo")(server.demo)
app.command("dashboard")(dashboard.dashboard)
app.command("run-code")(code.run_code)
app.command("security-report")(security.security_report)
app.command("doctor")(doctor.doctor)


@app.command("mcp")
def mcp() -> None:
    """Serve the MCP tools over stdio for an agent host (see docs/mcp.md)."""
    from ..mcp.stdio import serve_stdio

    serve_stdio()


err = Console(stderr=True)

Isolation = Annotated[
    str, typer.Option("--isolation", "-i", help="container (runc), gvisor (runsc) or microvm")
]


def _fail(exc: StockadeError) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    command: Annotated[list[str], typer.Argument(help="the command and its arguments, after --")],
    isolation: Isolation = "container",
    template: Annotated[Optional[str], typer.Option(help="template to start from")] = None,
    user: Annotated[Optional[str], typer.Option(help="run as this user (default: user)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds before the command is killed")] = 60,
) -> None:
    """Create a sandbox, run COMMAND in it, print its output, and remove the sandbox."""
    try:
        with Sandbox.create(template, isolation=isolation) as sb:  # type: ignore[arg-type]
            result = sb.commands.run(
                command,
                user=user,
                timeout=timeout,
                on_stdout=_write(sys.stdout),
                on_stderr=_write(sys.stderr),
            )
    except StockadeError as exc:
        _fail(exc)
    raise typer.Exit(result.exit_code)


def _write(stream: object):  # type: ignore[no-untyped-def]
    def write(text: str) -> None:
        stream.write(text)  # type: ignore[attr-defined]
        stream.flush()  # type: ignore[attr-defined]

    return write


@sandbox_app.command("ls")
def sandbox_ls() -> None:
    """List running sandboxes."""
    try:
        rows = Sandbox.list()
    except StockadeError as exc:
        _fail(exc)
    table = Table(
        Column("ID", no_wrap=True, min_width=20),
        "ISOLATION",
        Column("TEMPLATE", no_wrap=True),
        "STATE",
        "CPU",
        "MEMORY",
        "EXPIRES IN",
    )
    import time

    for info in rows:
        table.add_row(
            info.id,
            info.isolation,
            info.template,
            info.state,
            f"{info.cpu:g}",
            f"{info.memory_mb} MiB",
            f"{max(0, info.expires_at - time.time()):.0f} s",
        )
    Console().print(table)


@sandbox_app.command("info")
def sandbox_info(sandbox_id: Annotated[str, typer.Argument(help="the sandbox's id")]) -> None:
    """Show a sandbox: its state and why it is in it ("out of memory (python3)"), resources,
    metadata; for one that ended, why it ended, while its end record is kept."""
    try:
        try:
            shown = Sandbox.get_info(sandbox_id).model_dump(exclude={"envs"})  # envs: secrets
        except SandboxNotFound:
            end = Sandbox.get_end(sandbox_id)
            shown = {
                **end.sandbox.model_dump(exclude={"envs"}),
                "state": "ended",
                "reason": end.reason,
                "message": end.message,
                "ended_at": end.ended_at,
            }
    except StockadeError as exc:
        _fail(exc)
    for key, value in shown.items():
        if value not in (None, {}, []):
            print(f"{key}: {value}")


@sandbox_app.command("create")
def sandbox_create(
    isolation: Isolation = "container",
    template: Annotated[Optional[str], typer.Option()] = None,
    timeout: Annotated[float, typer.Option(help="lifetime in seconds")] = 300,
) -> None:
    """Create a sandbox and print its id (alone on the line)."""
    try:
        sb = Sandbox.create(template, isolation=isolation, timeout=timeout)  # type: ignore[arg-type]
    except StockadeError as exc:
        _fail(exc)
    print(sb.id)
    sb.close()


@sandbox_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sandbox_exec(
    sandbox_id: Annotated[str, typer.Argument(help="the sandbox's id")],
    command: Annotated[list[str], typer.Argument(help="the command, after --")],
    user: Annotated[Optional[str], typer.Option()] = None,
    timeout: Annotated[float, typer.Option()] = 60,
) -> None:
    """Run COMMAND in a running sandbox; exit with its exit code."""
    try:
        sb = Sandbox.connect(sandbox_id)
        result = sb.commands.run(
            command, user=user, timeout=timeout, on_stdout=_write(sys.stdout), on_stderr=_write(sys.stderr)
        )
        sb.close()
    except StockadeError as exc:
        _fail(exc)
    raise typer.Exit(result.exit_code)


@sandbox_app.command("shell")
def sandbox_shell(
    sandbox_id: Annotated[str, typer.Argument(help="the sandbox's id")],
    cmd: Annotated[Optional[str], typer.Option(help="run this instead of a login shell")] = None,
    user: Annotated[Optional[str], typer.Option()] = None,
) -> None:
    """Open an interactive terminal in a sandbox; exit with its exit code."""
    import asyncio

    from .shell import run_shell

    try:
        code = asyncio.run(run_shell(sandbox_id, cmd, user))
    except StockadeError as exc:
        _fail(exc)
    raise typer.Exit(code)


@sandbox_app.command("archive")
def sandbox_archive(sandbox_id: Annotated[str, typer.Argument(help="the sandbox's id")]) -> None:
    """Compress a stopped workspace's files to free disk (start or connect restores them)."""
    try:
        sb = Sandbox.get(sandbox_id)
        sb.archive()
        sb.close()
    except StockadeError as exc:
        _fail(exc)
    print(f"{sandbox_id} archived")


@sandbox_app.command("fork")
def sandbox_fork(
    sandbox_id: Annotated[str, typer.Argument(help="the sandbox's id")],
    n: Annotated[int, typer.Option("-n", "--count", min=1, max=16, help="copies to make")] = 1,
    memory: Annotated[
        Optional[bool],
        typer.Option(
            "--memory/--files-only",
            help="require processes and memory (gVisor), or copy the "
            "files only; default: memory where the tier can",
        ),
    ] = None,
) -> None:
    """Make N running copies of a running or paused sandbox; print their ids, one a line
    (docs/fork.md). Says on stderr when only the files were copied."""
    try:
        sb = Sandbox.get(sandbox_id)
        copies = sb.fork(n, memory=memory)
        sb.close()
    except StockadeError as exc:
        _fail(exc)
    for copy in copies:
        print(copy.id)
        copy.close()
    if copies and not copies[0].forked_memory:
        print(
            f"files copied, not processes: the {copies[0].info.isolation} tier starts the copies afresh",
            file=sys.stderr,
        )


@sandbox_app.command("egress")
def sandbox_egress(
    sandbox_id: Annotated[str, typer.Argument(help="the sandbox's id")],
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """Show the newest entries of a sandbox's egress log (docs/network.md)."""
    import time

    try:
        sb = Sandbox.get(sandbox_id)
        entries = sb.egress_log(limit)
        sb.close()
    except StockadeError as exc:
        _fail(exc)
    table = Table(
        "TIME",
        "KIND",
        Column("DESTINATION", no_wrap=True),
        Column("NAME", no_wrap=True),
        "VERDICT",
        "OUT",
        "IN",
        "REASON",
    )
    for e in entries:
        out, into = e.get("bytes_out"), e.get("bytes_in")
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(e["time"])),
            e["kind"],
            e.get("destination") or "",
            e.get("name") or "-",
            e["verdict"],
            "" if out is None else str(out),
            "" if into is None else str(into),
            e.get("reason", ""),
        )
    Console().print(table)


@sandbox_app.command("kill")
def sandbox_kill(sandbox_id: Annotated[str, typer.Argument(help="the sandbox's id")]) -> None:
    """Kill a sandbox and remove every trace of it."""
    try:
        Sandbox.get(sandbox_id).kill()  # never wakes (or restores) it first
    except StockadeError as exc:
        _fail(exc)


__all__ = ["app"]

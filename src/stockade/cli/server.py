"""``stockade serve`` and ``stockade demo``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional, cast

import typer
from rich.console import Console

from ..config import default_data_dir, local_socket

if TYPE_CHECKING:
    from ..server.settings import ServerSettings

out = Console()


def serve(
    host: Annotated[Optional[str], typer.Option(help="address to listen on [127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port [8800]")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="state directory")] = None,
    config: Annotated[
        Optional[Path],
        typer.Option(
            help="TOML settings file (also $STOCKADE_CONFIG); flags win over the environment, "
            "which wins over the file"
        ),
    ] = None,
    database_url: Annotated[
        Optional[str],
        typer.Option(help="store URL (also $STOCKADE_DATABASE_URL); default SQLite in the data directory"),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            help="serve on the data directory's unix socket "
            "instead of TCP, without keys (what the SDK "
            "uses locally)"
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    cluster: Annotated[
        Optional[str],
        typer.Option(
            help="serve as an API replica of the Ray cluster at this address (host:port of its "
            "head); needs a PostgreSQL --database-url, $STOCKADE_ADMIN_KEY and "
            "$STOCKADE_CLUSTER_SECRET "
            "(docs/cluster.md)"
        ),
    ] = None,
) -> None:
    """Run the Stockade server: the HTTP API over this host's engine, with API keys.

    The admin key is $STOCKADE_ADMIN_KEY, or is generated at first start into
    <data dir>/private/admin.key (owner-only).
    """
    from ..engine import EngineConfig
    from ..server.serve import serve as run_server
    from ..server.settings import load_settings

    if local:
        directory = data_dir or default_data_dir()
        run_server(EngineConfig(data_dir=directory), uds=local_socket(directory))
        return
    try:
        settings = load_settings(config, host=host, port=port, data_dir=data_dir, database_url=database_url)
    except ValueError as exc:
        out.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if cluster is not None:
        _serve_cluster(cluster, settings, log_level)
        return
    run_server(EngineConfig(data_dir=settings.data_dir), settings=settings, log_level=log_level)


def _serve_cluster(cluster: str, settings: "ServerSettings", log_level: str) -> None:
    import os

    from ..cluster.api import serve as serve_replica
    from ..cluster.tokens import cluster_secret

    url = settings.database_url or ""
    if not url.startswith(("postgresql://", "postgres://")):
        out.print(
            "[red]error:[/red] --cluster needs --database-url postgresql://... (or "
            "$STOCKADE_DATABASE_URL): the replicas share their state in PostgreSQL"
        )
        raise typer.Exit(2)
    if len(settings.admin_key or "") < 16:
        out.print(
            "[red]error:[/red] --cluster needs $STOCKADE_ADMIN_KEY (16 characters or "
            "more), the same on every replica"
        )
        raise typer.Exit(2)
    try:
        wait = float(os.environ.get("STOCKADE_PLACEMENT_WAIT", "30"))
    except ValueError:
        out.print("[red]error:[/red] $STOCKADE_PLACEMENT_WAIT must be a number of seconds")
        raise typer.Exit(2) from None
    serve_replica(settings, cluster, cluster_secret(), wait, log_level)


Tier = Literal["container", "gvisor", "microvm"]
TIERS: tuple[Tier, ...] = ("container", "gvisor", "microvm")
#: The sandbox the demo leaves running for the dashboard ends by itself after this long.
LEFT_RUNNING = 1800


def demo(
    isolation: Annotated[
        Optional[list[str]],
        typer.Option("--isolation", "-i", help="a tier to try (repeat); default: all three"),
    ] = None,
) -> None:
    """Create a sandbox on each tier, run code in it and remove it; then leave one sandbox
    running and print a link that opens it in the dashboard."""
    from .. import Sandbox
    from ..sdk import StockadeError
    from .dashboard import sign_in_link
    from .images import build_with_progress

    if unknown := [t for t in isolation or [] if t not in TIERS]:
        out.print(f"[red]error:[/red] unknown tier {unknown[0]!r}: choose from {', '.join(TIERS)}")
        raise typer.Exit(2)
    tiers = [cast(Tier, t) for t in isolation] if isolation else list(TIERS)
    build_with_progress()
    for tier in tiers:
        with Sandbox.create(isolation=tier) as sb:
            result = sb.commands.run("python3 -c 'import platform; print(6*7, platform.release())'")
            sb.files.write("/home/user/hello.txt", f"hello from {tier}\n")
            text = sb.files.read("/home/user/hello.txt")
            out.print(
                f"[bold]{tier:9}[/bold] {sb.id}: run -> {result.stdout.strip()!r} "
                f"(exit {result.exit_code}); file -> {text.strip()!r}"
            )
    with Sandbox.create("code-interpreter") as sb:
        sb.run_code("import pandas as pd; df = pd.DataFrame({'x': [1, 2, 3]})")
        execution = sb.run_code("df.x.sum()")
        out.print(f"[bold]code-interpreter[/bold] {sb.id}: df.x.sum() -> {execution.text!r}")
    out.print("[green]demo done: every tier ran code, and those sandboxes are removed[/green]")
    kept = Sandbox.create(isolation=tiers[0], timeout=LEFT_RUNNING, metadata={"created-by": "demo"})
    kept.files.write(
        "/home/user/hello.txt",
        "Left running by 'stockade demo'. Type in the terminal below, browse the files, or press Kill.\n",
    )
    kept.close()  # the connection only: the sandbox stays
    try:
        url = sign_in_link()
    except StockadeError as exc:
        out.print(
            f"sandbox {kept.id} is left running for {LEFT_RUNNING // 60} min; the "
            f"dashboard is not available here: {exc}"
        )
        return
    out.print(
        f"\nSandbox [bold]{kept.id}[/bold] is left running for you "
        f"({LEFT_RUNNING // 60} min, or until you kill it). See it, and a terminal "
        f"into it, in the dashboard; open this link in a browser on this machine "
        f"(it signs you in, once, within 10 min; 'stockade dashboard' prints a new one):"
    )
    print(f"Dashboard: {url}", flush=True)
    out.print(
        "[dim]From another machine: ssh -L 8801:127.0.0.1:8801 THIS-HOST, then open the "
        "link there (use the port the link names).[/dim]"
    )
    out.print("MCP hosts (Claude, Cursor, VS Code): see docs/mcp.md.")

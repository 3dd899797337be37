"""``stockade serve`` and ``stockade demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..config import default_data_dir, local_socket

out = Console()


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8800,
    data_dir: Annotated[Optional[Path], typer.Option(help="state directory")] = None,
    local: Annotated[bool, typer.Option(help="serve on the data directory's unix socket "
                                              "instead of TCP (what the SDK uses locally)")] = False,
) -> None:
    """Run the Stockade server (the HTTP API over this host's engine)."""
    from ..engine import EngineConfig
    from ..server.serve import serve as run_server

    directory = data_dir or default_data_dir()
    config = EngineConfig(data_dir=directory)
    if local:
        run_server(config, uds=local_socket(directory))
    else:
        run_server(config, host=host, port=port)


def demo() -> None:
    """Create a sandbox on each tier, run code in it, and remove it."""
    from .. import Sandbox
    from .images import build_with_progress

    build_with_progress()
    for isolation in ("container", "gvisor"):
        with Sandbox.create(isolation=isolation) as sb:  # type: ignore[arg-type]
            result = sb.commands.run("python3 -c 'import platform; print(6*7, platform.release())'")
            sb.files.write("/home/user/hello.txt", f"hello from {isolation}\n")
            text = sb.files.read("/home/user/hello.txt")
            out.print(f"[bold]{isolation:9}[/bold] {sb.id}: run -> {result.stdout.strip()!r} "
                      f"(exit {result.exit_code}); file -> {text.strip()!r}")
    out.print("[green]demo done: both tiers ran code and were removed[/green]")

"""``stockade image build --dockerfile`` and ``stockade image import``: through the server
(local daemon or ``STOCKADE_API_URL``), with a live display of the build's steps and logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.progress import TimeElapsedColumn
from rich.text import Text

from ..sdk.exceptions import StockadeError
from ..sdk.sync import Template

err = Console(stderr=True)
STATUS = {"built": "[green]built[/green]", "cached": "[cyan]cached[/cyan]", "configured": "[dim]set[/dim]"}


def build_dockerfile(dockerfile: Path, name: str, context: Path | None) -> None:
    """Build template ``name``, showing step i/n, each step's outcome and the RUN output."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task(f"{name}: sending the build context", total=None)

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "log":
                progress.console.print(Text(event["data"].rstrip("\n"), style="dim"))
                return
            where = f"[{event['step']}/{event['total']}] {event['instruction'][:100]}"
            if event["status"] == "started":
                progress.update(task, total=event["total"], description=f"{name}: {where}")
            else:
                progress.console.print(f"{STATUS.get(event['status'], event['status'])} {escape(where)}")
                progress.update(task, total=event["total"], completed=event["step"])

        try:
            info = Template.build(
                str(dockerfile), name=name, context=str(context) if context else None, on_event=on_event
            )
        except (StockadeError, OSError) as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
        progress.update(task, description=f"{name}: ready")
    err.print(f"template [bold]{info.name}[/bold] ready: Sandbox.create(template={info.name!r})")


def import_archive(path: Path, name: str) -> None:
    """Import an OCI image layout or a ``docker save`` archive as template ``name``."""
    with err.status(f"importing {path.name} as {name}"):
        try:
            info = Template.import_image(str(path), name=name)
        except (StockadeError, OSError) as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from None
    err.print(f"template [bold]{info.name}[/bold] imported ({info.size_bytes / 1e6:.0f} MB)")

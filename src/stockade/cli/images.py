"""``stockade image``: list, build and remove templates on this host."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import default_images_dir
from ..images import ImageError, ImageStore, build_base_image

app = typer.Typer(help="Manage images (templates) on this host.", no_args_is_help=True)
err = Console(stderr=True)


def store() -> ImageStore:
    return ImageStore(default_images_dir())


@app.command("ls")
def ls() -> None:
    """List images."""
    table = Table("NAME", "SIZE", "FILES", "CREATED", "SOURCE")
    for info in store().list():
        table.add_row(info.name, f"{info.size_bytes / 1e6:.0f} MB", str(info.files),
                      info.created.strftime("%Y-%m-%d %H:%M"), str(info.source))
    Console().print(table)


@app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="image to remove")]) -> None:
    """Remove an image."""
    try:
        store().remove(name)
    except ImageError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command("build")
def build(force: Annotated[bool, typer.Option(help="rebuild even if it exists")] = False) -> None:
    """Build the base image (Debian 12 with python3) from Debian's packages."""
    build_with_progress(force=force)


def build_with_progress(force: bool = False) -> None:
    """Build the base image, showing the stages as they pass."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TimeElapsedColumn(), console=err) as progress:
        task = progress.add_task("base image", total=1.0)

        def report(stage: str, fraction: float | None) -> None:
            progress.update(task, description=f"base image: {stage}",
                            completed=fraction if fraction is not None else None)

        try:
            build_base_image(store(), "base", progress=report, force=force)
        except ImageError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        progress.update(task, description="base image: ready", completed=1.0)

"""``stockade image``: list, build and remove templates on this host."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import default_images_dir
from ..images import ImageError, ImageStore, build_base_image
from ..images.templates import build_template, template_names
from .template_build import build_dockerfile, import_archive

app = typer.Typer(help="Manage images (templates) on this host.", no_args_is_help=True)
err = Console(stderr=True)


def store() -> ImageStore:
    return ImageStore(default_images_dir())


@app.command("ls")
def ls() -> None:
    """List images."""
    table = Table("NAME", "SIZE", "FILES", "CREATED", "SOURCE")
    for info in store().list():
        if info.hidden:  # a Dockerfile step's cached layer
            continue
        table.add_row(
            info.name,
            f"{info.size_bytes / 1e6:.0f} MB",
            str(info.files),
            info.created.strftime("%Y-%m-%d %H:%M"),
            str(info.source),
        )
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
def build(
    force: Annotated[bool, typer.Option(help="rebuild even if it exists")] = False,
    template: Annotated[
        Optional[str],
        typer.Option(help=f"build this template instead of the base image: {', '.join(template_names())}"),
    ] = None,
    guest: Annotated[
        bool, typer.Option(help="build the microVM guest instead: kernel, initramfs, image disks")
    ] = False,
    dockerfile: Annotated[
        Optional[Path],
        typer.Option(
            "--dockerfile",
            "-f",
            help="build a template from this Dockerfile (FROM, RUN, "
            "COPY, ENV, WORKDIR, USER) in build sandboxes, through the server",
        ),
    ] = None,
    name: Annotated[Optional[str], typer.Option(help="the Dockerfile template's name")] = None,
    context: Annotated[
        Optional[Path], typer.Option(help="COPY's build context (default: the Dockerfile's directory)")
    ] = None,
) -> None:
    """Build the base image (Debian 12 with python3) from Debian's packages, or a template."""
    if dockerfile is not None:
        if not name:
            err.print("[red]error:[/red] --dockerfile needs --name")
            raise typer.Exit(2)
        build_dockerfile(dockerfile, name, context)
        return
    if guest:
        build_guest_with_progress(force=force)
        return
    build_with_progress(force=force, template=template)


@app.command("import")
def import_image(
    path: Annotated[
        Path, typer.Argument(help="an OCI image layout (directory or tar) or a `docker save` archive")
    ],
    name: Annotated[str, typer.Option(help="the template's name")],
) -> None:
    """Import an OCI image or a docker-save archive as a template (it must hold python3)."""
    import_archive(path, name)


def build_guest_with_progress(force: bool = False) -> None:
    """Build the microVM guest kernel, initramfs and the disks of existing images."""
    import stockade.agent

    from ..images.guest import build_guest

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task("microVM guest", total=1.0)

        def report(stage: str, fraction: float | None) -> None:
            progress.update(
                task,
                description=f"microVM guest: {stage}",
                completed=fraction if fraction is not None else None,
            )

        images = tuple(info.name for info in store().list())
        try:
            build_guest(store(), Path(stockade.agent.__file__).parent, images, report, force)
        except ImageError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None


def build_with_progress(force: bool = False, template: str | None = None) -> None:
    """Build the base image (or ``template``), showing the stages as they pass."""
    label = f"{template} template" if template else "base image"
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task(label, total=1.0)

        def report(stage: str, fraction: float | None) -> None:
            progress.update(
                task, description=f"{label}: {stage}", completed=fraction if fraction is not None else None
            )

        try:
            if template:
                build_template(store(), template, progress=report, force=force)
            else:
                build_base_image(store(), "base", progress=report, force=force)
        except ImageError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        progress.update(task, description=f"{label}: ready", completed=1.0)

"""``stockade run-code``: run a cell in a sandbox's code context from a shell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .. import ExecutionTimeout, Sandbox, StockadeError

err = Console(stderr=True)


def run_code(
    sandbox_id: Annotated[str, typer.Argument(help="the sandbox's id")],
    code: Annotated[Optional[str], typer.Argument(help="the cell (or use -f; '-' reads stdin)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="read the cell from a file")] = None,
    language: Annotated[
        Optional[str], typer.Option("--language", "-l", help="python (default) or bash")
    ] = None,
    context: Annotated[
        Optional[str], typer.Option(help="a context id (default: the sandbox's context for the language)")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds before the cell is interrupted")] = 300,
) -> None:
    """Run a cell in a running sandbox; print its output, results and error.

    Exits 1 if the cell raised, 124 if it timed out."""
    if (code is None) == (file is None):
        err.print("[red]error:[/red] give the cell as an argument or with -f FILE")
        raise typer.Exit(2)
    source = file.read_text() if file is not None else code or ""
    if source == "-":
        source = sys.stdin.read()

    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def errout(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    try:
        sb = Sandbox.connect(sandbox_id)
        try:
            ex = sb.run_code(
                source, language=language, context=context, timeout=timeout, on_stdout=out, on_stderr=errout
            )
        finally:
            sb.close()
    except ExecutionTimeout as exc:
        err.print(f"[red]timeout:[/red] {exc}")
        raise typer.Exit(124) from None
    except StockadeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for result in ex.results:
        if result.text is not None:
            print(result.text)
        others = [f for f in result.formats() if f != "text"]
        if others:
            err.print(f"[dim]({', '.join(others)} output not shown)[/dim]")
    if ex.error is not None:
        errout((ex.error.traceback or f"{ex.error.name}: {ex.error.value}") + "\n")
        raise typer.Exit(1)

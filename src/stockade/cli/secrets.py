"""``stockade secret``: the caller's secrets (set, ls, rm). A value is read from stdin or a
prompt, never from the command line (where ``ps`` and shell history would keep it)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any, Awaitable, Callable, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ..sdk._portal import call
from ..sdk.exceptions import StockadeError
from ..sdk.secrets import AsyncSecret

app = typer.Typer(
    help="Secrets injected by the egress proxy; sandboxes see placeholders.", no_args_is_help=True
)
err = Console(stderr=True)


T = TypeVar("T")


def _run(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    try:
        return call(fn, *args, **kwargs)
    except StockadeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command("set")
def set_secret(
    name: Annotated[str, typer.Argument(help="like an environment variable: OPENAI_KEY")],
    host: Annotated[
        list[str],
        typer.Option("--host", help="a host it may be sent to (repeat; '*.example.com' for subdomains)"),
    ],
    inject_body: Annotated[bool, typer.Option(help="replace the placeholder in request bodies too")] = False,
) -> None:
    """Create or replace a secret; its value is read from stdin (or prompted for)."""
    value = (
        sys.stdin.read().rstrip("\r\n") if not sys.stdin.isatty() else typer.prompt("value", hide_input=True)
    )
    info = _run(AsyncSecret.set, name, value, hosts=host, inject_body=inject_body)
    print(f"{info.name} -> {', '.join(info.hosts)}")


@app.command("ls")
def list_secrets() -> None:
    """Names, bound hosts and times (never values)."""
    table = Table("NAME", "HOSTS", "BODY", "UPDATED")
    for info in _run(AsyncSecret.list):
        table.add_row(
            info.name,
            ", ".join(info.hosts),
            "yes" if info.inject_body else "no",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(info.updated_at)),
        )
    Console().print(table)


@app.command("rm")
def remove_secret(name: str) -> None:
    """Delete a secret."""
    _run(AsyncSecret.delete, name)

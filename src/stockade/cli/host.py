"""``stockade host``: run this machine as one host of a Stockade cluster, and manage the
cluster's hosts through an API replica (``ls``, ``drain``, ``undrain``; docs/cluster.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..config import default_data_dir
from .keys import _call

out = Console()
app = typer.Typer(
    help="Run this machine as a cluster host, or manage the cluster's hosts "
    "(through $STOCKADE_API_URL with the admin key)."
)


@app.callback(invoke_without_command=True)
def host(
    ctx: typer.Context,
    cluster: Annotated[
        Optional[str], typer.Option(help="the Ray head's address, host:port (runs this machine as a host)")
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="this host's state directory")] = None,
    name: Annotated[
        Optional[str],
        typer.Option(help="host name in the cluster [machine name and a digest of the data directory]"),
    ] = None,
    slots: Annotated[
        str, typer.Option(help="sandboxes per tier, e.g. container=8,gvisor=8 [by memory; microvm=0]")
    ] = "",
    kvm: Annotated[
        bool, typer.Option(help="guests boot under KVM here: offer microvm slots and the 'kvm' resource")
    ] = False,
    allow_tcg: Annotated[
        bool, typer.Option(help="offer microvm slots without KVM (slow TCG guests)")
    ] = False,
    node_ip: Annotated[
        Optional[str], typer.Option(help="this machine's address in the Ray cluster [Ray's choice]")
    ] = None,
    shared_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="storage every host reads (NFS...): stopped workspaces are kept there, so that "
            "another host can start them if this one dies"
        ),
    ] = None,
) -> None:
    """Join a Ray cluster as one host: start its Ray node and a host actor owning its engine.

    Runs until SIGTERM or SIGINT; sandboxes keep running and are re-attached on next start.
    """
    if ctx.invoked_subcommand is not None:
        return
    if cluster is None:
        out.print(
            "[red]error:[/red] --cluster HEAD:PORT is needed to run this machine as a "
            "host (or use a command: ls, drain, undrain)"
        )
        raise typer.Exit(2)
    from ..cluster.node import HostOptions, default_name, run_host
    from ..cluster.resources import capacity, parse_slots
    from ..cluster.tokens import cluster_secret

    try:
        wanted = parse_slots(slots)
    except ValueError as exc:
        out.print(f"[red]error:[/red] --slots: {exc}")
        raise typer.Exit(2) from None
    directory = (data_dir or default_data_dir()).resolve()
    secret = cluster_secret()
    logging.basicConfig(level=logging.INFO)
    run_host(
        HostOptions(
            cluster=cluster,
            data_dir=directory,
            name=name or default_name(directory),
            capacity=capacity(wanted, kvm=kvm, allow_tcg=allow_tcg),
            node_ip=node_ip,
            secret=secret,
            shared_dir=shared_dir.resolve() if shared_dir else None,
        )
    )


HostName = Annotated[str, typer.Argument(help="the host's name (see 'stockade host ls')")]


def _show(hosts: list[dict[str, Any]]) -> None:
    table = Table("NAME", "STATE", "DRAINING", "SANDBOXES", "REASON")
    for h in hosts:
        table.add_row(
            h["name"],
            h["state"],
            "yes" if h.get("draining") else "no",
            str(len(h.get("sandboxes", []))),
            h.get("reason") or "",
        )
    out.print(table)


@app.command("ls")
def host_ls() -> None:
    """List the cluster's hosts: state, whether draining, sandboxes placed there."""
    _show(_call("GET", "/cluster/hosts"))


@app.command("drain")
def host_drain(name: HostName) -> None:
    """Take no new sandboxes on host NAME; its sandboxes keep running until they end."""
    found = _call("POST", f"/cluster/hosts/{name}/drain")
    print(f"host {name} draining: no new sandboxes; {len(found['sandboxes'])} still on it")


@app.command("undrain")
def host_undrain(name: HostName) -> None:
    """Let host NAME take new sandboxes again."""
    _call("POST", f"/cluster/hosts/{name}/undrain")
    print(f"host {name} takes new sandboxes again")

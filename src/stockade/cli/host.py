"""``stockade host``: run this machine as one host of a Stockade cluster (docs/cluster.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..config import default_data_dir

out = Console()


def host(
    cluster: Annotated[str, typer.Option(help="the Ray head's address, host:port")],
    data_dir: Annotated[Optional[Path], typer.Option(help="this host's state directory")] = None,
    name: Annotated[Optional[str], typer.Option(
        help="host name in the cluster [machine name and a digest of the data directory]")] = None,
    slots: Annotated[str, typer.Option(
        help="sandboxes per tier, e.g. container=8,gvisor=8 [by memory; microvm=0]")] = "",
    kvm: Annotated[bool, typer.Option(help="guests boot under KVM here: offer microvm slots "
                                           "and the 'kvm' resource")] = False,
    allow_tcg: Annotated[bool, typer.Option(help="offer microvm slots without KVM (slow TCG "
                                                 "guests)")] = False,
    node_ip: Annotated[Optional[str], typer.Option(
        help="this machine's address in the Ray cluster [Ray's choice]")] = None,
) -> None:
    """Join a Ray cluster as one host: start its Ray node and a host actor owning its engine.

    Runs until SIGTERM or SIGINT; sandboxes keep running and are re-attached on next start.
    """
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
    run_host(HostOptions(cluster=cluster, data_dir=directory,
                         name=name or default_name(directory),
                         capacity=capacity(wanted, kvm=kvm, allow_tcg=allow_tcg),
                         node_ip=node_ip, secret=secret))

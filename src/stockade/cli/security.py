"""``stockade security-report``: run the security battery on every tier and print the table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the battery drives the host (cgroups, runtimes): imported only when run
    from ..security import AttackResult
    from ..security.faults import FaultResult
    from ..security.load import LoadResult

#: = stockade.security.pausefaults.LEAK_CHECK (not imported: the battery loads only when run)
LEAK_CHECK = "leaks after all faults"


def _attack_table(
    results: dict[str, list["AttackResult"]], network: dict[str, list["AttackResult"] | str]
) -> Table:
    table = Table(
        "TIER",
        "ATTACKS TRIED",
        "BLOCKED",
        "CONTAINED",
        "RECOVERED",
        "GOT THROUGH",
        "ERRORS",
        "OF WHICH NETWORK",
        "NEIGHBOUR SLOWDOWN (CPU HOG)",
        title="Escape and abuse corpus (with the network attacks)",
    )
    for tier, corpus_rows in results.items():
        net = network.get(tier, [])
        rows = corpus_rows + (net if isinstance(net, list) else [])
        count = {
            o: sum(r.outcome == o for r in rows)
            for o in ("blocked", "contained", "recovered", "succeeded", "error")
        }
        hog = next((r.figures for r in rows if r.attack == "cpu_hog"), {})
        slowdown = (
            (
                f"{hog['slowdown']:.2f}x ({hog['neighbour_latency_idle_ms']:.0f} -> "
                f"{hog['neighbour_latency_hog_ms']:.0f} ms)"
            )
            if hog
            else "-"
        )
        through = count["succeeded"]
        net_through = sum(r.outcome == "succeeded" for r in net) if isinstance(net, list) else 0
        net_cell = (
            f"{len(net)} tried, {net_through} through"
            if isinstance(net, list)
            else "none (no network)"
            if net
            else "not run"
        )
        table.add_row(
            tier,
            str(len(rows)),
            str(count["blocked"]),
            str(count["contained"]),
            str(count["recovered"]),
            f"[red]{through}[/red]" if through else "0",
            str(count["error"]),
            net_cell,
            slowdown,
        )
    return table


def _differences(results: dict[str, list["AttackResult"]]) -> Table:
    table = Table("ATTACK", "USER", *results, title="Outcomes that differ between tiers")
    keyed = {tier: {(r.attack, r.user): r.outcome for r in rows} for tier, rows in results.items()}
    keys = sorted({k for rows in keyed.values() for k in rows})
    for key in keys:
        outcomes = [keyed[t].get(key, "-") for t in results]
        if len(set(outcomes)) > 1:
            table.add_row(key[0], key[1], *outcomes)
    return table


def _fault_summary(faults: list["FaultResult"]) -> Table:
    table = Table(
        "TIER",
        "FAULTS INJECTED",
        "RECOVERED, NOTHING LOST",
        "LEAKS AFTER",
        title="Faults (runtime, agent, daemon; idle, exec, upload, pause, resume, kill)",
    )
    for tier in dict.fromkeys(f.tier for f in faults):
        rows = [f for f in faults if f.tier == tier and f.fault != LEAK_CHECK]
        leak_checks = [f for f in faults if f.tier == tier and f.fault == LEAK_CHECK]
        table.add_row(
            tier,
            str(len(rows)),
            str(sum(f.recovered for f in rows)),
            "0" if all(f.recovered for f in leak_checks) else "[red]some[/red]",
        )
    return table


def _fault_table(faults: list["FaultResult"]) -> Table:
    table = Table("TIER", "FAULT", "RECOVERED", "SETTLED AFTER", "DETAIL", title="Every fault")
    for f in faults:
        table.add_row(
            f.tier,
            f.fault,
            "yes" if f.recovered else "[red]no[/red]",
            f"{f.seconds_to_error:.2f} s",
            f.detail[:70],
        )
    return table


def _load_table(loads: list["LoadResult"]) -> Table:
    table = Table(
        "TIER",
        "CLIENTS",
        "SANDBOXES/S",
        "PEAK LIVE",
        "CREATE P50/P99 MS",
        "EXEC P50/P99 MS",
        "CYCLE P50/P99 MS",
        "REFUSED",
        "ERRORS",
        "LEAKS",
        title="Load",
    )
    for r in loads:

        def pair(op: str) -> str:
            return f"{r.percentile_ms(op, 50):.0f} / {r.percentile_ms(op, 99):.0f}"

        table.add_row(
            r.tier,
            str(r.clients),
            f"{r.sandboxes_per_second:.2f}",
            str(r.peak_concurrent),
            pair("create"),
            pair("exec"),
            pair("cycle"),
            str(r.refusals),
            str(len(r.errors)),
            str(len(r.leaks)),
        )
    return table


def security_report(
    tier: Annotated[Optional[list[str]], typer.Option("--tier", help="tier(s) to attack")] = None,
    corpus: Annotated[
        Optional[Path], typer.Option(help="attack directory (default: tests/security/attacks)")
    ] = None,
    load_seconds: Annotated[float, typer.Option(help="seconds of load per tier (0: skip)")] = 15,
    clients: Annotated[int, typer.Option(help="concurrent load clients")] = 8,
    faults: Annotated[bool, typer.Option(help="inject runtime, agent and daemon faults")] = True,
    network: Annotated[
        bool, typer.Option(help="run the network attacks (in a namespace this command creates)")
    ] = True,
    details: Annotated[bool, typer.Option(help="print every attack's outcome")] = False,
) -> None:
    """Attack every tier with the corpus, inject faults, apply load; print what held.

    Runs on this host as root against a private daemon. Exits 1 if anything got through.
    """
    from ..security import TIERS, load_corpus, run_tier
    from ..security.daemon import PrivateDaemon
    from ..security.faults import run_faults
    from ..security.load import run_load
    from ..security.netattack import NetworkRefused, run_network
    from ..security.netplay import Playground
    from ..security.pausefaults import run_lifecycle_faults

    console = Console()
    attacks = load_corpus(corpus)
    tiers = tier or list(TIERS)
    results: dict[str, list[AttackResult]] = {}
    fault_results: list[FaultResult] = []
    loads: list[LoadResult] = []
    net_results: dict[str, list[AttackResult] | str] = {}
    owner = PrivateDaemon()
    with owner as data_dir:
        for name in tiers:
            with console.status(f"{name}: {len(attacks)} attacks"):
                results[name] = run_tier(name, data_dir, attacks)
            if faults:
                with console.status(f"{name}: faults (the daemon is killed and restarted)"):
                    fault_results += run_faults(name, data_dir)
                    fault_results += run_lifecycle_faults(name, owner)
            if load_seconds > 0:
                with console.status(f"{name}: {clients} clients for {load_seconds:g} s"):
                    loads.append(run_load(name, data_dir, clients, load_seconds))
    if network:
        with Playground() as pg, PrivateDaemon(env=pg.env()) as net_dir:
            for name in tiers:
                with console.status(f"{name}: network attacks"):
                    try:
                        net_results[name] = run_network(name, net_dir, pg)
                    except NetworkRefused as exc:
                        net_results[name] = str(exc)
    console.print(_attack_table(results, net_results))
    for name, refused in net_results.items():
        if isinstance(refused, str):
            console.print(f"network attacks on {name}: not run, {refused}")
    if len(results) > 1:
        console.print(_differences(results))
    if details:
        detail = Table("TIER", "ATTACK", "USER", "OUTCOME", "DETAIL", title="Every attack")
        for rows in (*results.values(), *(n for n in net_results.values() if isinstance(n, list))):
            for r in rows:
                detail.add_row(r.tier, r.attack, r.user, r.outcome, r.detail[:90])
        console.print(detail)
    if fault_results:
        console.print(_fault_summary(fault_results))
        if details or not all(f.recovered for f in fault_results):
            console.print(_fault_table(fault_results))
    if loads:
        console.print(_load_table(loads))
    broken = [
        r
        for rows in (*results.values(), *(n for n in net_results.values() if isinstance(n, list)))
        for r in rows
        if not r.passed
    ]
    broken_faults = [f for f in fault_results if not f.recovered]
    load_failures = [r for r in loads if r.errors or r.leaks]
    for r in broken:
        console.print(f"[red]got through:[/red] {r.tier} {r.attack} as {r.user}: {r.detail}")
    if broken or broken_faults or load_failures:
        raise typer.Exit(1)

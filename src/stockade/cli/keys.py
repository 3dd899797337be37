"""``stockade keys`` and ``stockade tenants``: manage a remote server's API keys and tenants.

They talk to ``$STOCKADE_API_URL`` with ``$STOCKADE_API_KEY`` (the admin key for tenants and for
other tenants' keys).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..sdk._transport import Api, ConnectionConfig
from ..sdk.exceptions import StockadeError

keys_app = typer.Typer(help="API keys of a remote server (shown once, stored hashed).", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants and their quotas (admin key).", no_args_is_help=True)
err = Console(stderr=True)


def _call(method: str, url: str, **kwargs: Any) -> Any:
    config = ConnectionConfig.resolve()
    if config.local:
        err.print(
            "[red]error:[/red] set STOCKADE_API_URL (and STOCKADE_API_KEY): keys, "
            "tenants and cluster hosts exist only on a remote server"
        )
        raise typer.Exit(2)

    async def go() -> Any:
        api = Api(config)
        try:
            return await api.request(method, url, **kwargs)
        finally:
            await api.aclose()

    try:
        return asyncio.run(go())
    except StockadeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


@keys_app.command("create")
def keys_create(
    tenant: Annotated[
        Optional[str], typer.Option(help="tenant the key acts for (default: your key's own); created if new")
    ] = None,
    name: Annotated[Optional[str], typer.Option(help="a label to recognise the key by")] = None,
    expires_in: Annotated[Optional[float], typer.Option(help="seconds until it expires")] = None,
    style: Annotated[
        str, typer.Option(help="'e2b' for a key shaped e2b_<hex>, which E2B's SDKs accept")
    ] = "stockade",
) -> None:
    """Create an API key. The key is printed once, alone on the last line of stdout."""
    body = {
        k: v
        for k, v in {"tenant": tenant, "name": name, "expires_in": expires_in, "style": style}.items()
        if v is not None
    }
    created = _call("POST", "/keys", json=body)
    err.print(f"created key {created['id']} for tenant {created['tenant']}; it is shown only now, store it:")
    print(created["key"])


@keys_app.command("ls")
def keys_ls(tenant: Annotated[Optional[str], typer.Option(help="only this tenant's")] = None) -> None:
    """List keys by id (prefix): never the secret."""
    params: dict[str, Any] = {"tenant": tenant} if tenant else {}
    table = Table("ID", "TENANT", "NAME", "STATE", "CREATED", "EXPIRES")
    while True:
        page = _call("GET", "/keys", params=params)
        for k in page["items"]:
            table.add_row(
                k["id"],
                k["tenant"],
                k["name"] or "",
                k["state"],
                _when(k["created_at"]),
                _when(k["expires_at"]),
            )
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id (sk_...)")]) -> None:
    """Revoke a key at once."""
    row = _call("DELETE", f"/keys/{key_id}")
    err.print(f"revoked {row['id']} (tenant {row['tenant']})")


QuotaOpt = Annotated[Optional[float], typer.Option()]


def _quotas(
    max_sandboxes: Optional[int],
    max_vcpu: Optional[float],
    max_memory_mb: Optional[int],
    max_lifetime: Optional[float],
) -> dict[str, Any]:
    values = {
        "max_sandboxes": max_sandboxes,
        "max_vcpu": max_vcpu,
        "max_memory_mb": max_memory_mb,
        "max_lifetime": max_lifetime,
    }
    return {k: v for k, v in values.items() if v is not None}


def _print_tenants(rows: list[dict[str, Any]]) -> None:
    table = Table("TENANT", "SANDBOXES", "VCPU", "MEMORY MiB", "MAX LIFETIME s")
    for t in rows:
        table.add_row(
            t["name"],
            f"{t['sandboxes']}/{t['max_sandboxes']}",
            f"{t['vcpu']:g}/{t['max_vcpu']:g}",
            f"{t['memory_mb']}/{t['max_memory_mb']}",
            f"{t['max_lifetime']:g}",
        )
    Console().print(table)


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="lower-case letters, digits, - and _")],
    max_sandboxes: Annotated[Optional[int], typer.Option()] = None,
    max_vcpu: QuotaOpt = None,
    max_memory_mb: Annotated[Optional[int], typer.Option()] = None,
    max_lifetime: QuotaOpt = None,
) -> None:
    """Create a tenant, optionally with its own quotas."""
    body = {"name": name, **_quotas(max_sandboxes, max_vcpu, max_memory_mb, max_lifetime)}
    _print_tenants([_call("POST", "/tenants", json=body)])


@tenants_app.command("set")
def tenants_set(
    name: Annotated[str, typer.Argument()],
    max_sandboxes: Annotated[Optional[int], typer.Option()] = None,
    max_vcpu: QuotaOpt = None,
    max_memory_mb: Annotated[Optional[int], typer.Option()] = None,
    max_lifetime: QuotaOpt = None,
) -> None:
    """Change a tenant's quotas."""
    body = _quotas(max_sandboxes, max_vcpu, max_memory_mb, max_lifetime)
    _print_tenants([_call("PATCH", f"/tenants/{name}", json=body)])


@tenants_app.command("ls")
def tenants_ls() -> None:
    """Tenants with their usage and quotas."""
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    while True:
        page = _call("GET", "/tenants", params=params)
        rows += page["items"]
        if not page.get("next_cursor"):
            break
        params["cursor"] = page["next_cursor"]
    _print_tenants(rows)

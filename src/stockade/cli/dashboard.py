"""``stockade dashboard``: a one-time link that signs a browser in to the dashboard, so that
nobody has to copy an API key into a form (and no key ever appears in a URL)."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from rich.console import Console

from ..sdk._transport import Api, ConnectionConfig, ensure_local_daemon
from ..sdk.exceptions import NotFoundError, StockadeError

err = Console(stderr=True)


def sign_in_link() -> str:
    """A fresh sign-in link from the server the SDK would talk to (the local daemon, or
    ``$STOCKADE_API_URL`` as ``$STOCKADE_API_KEY``)."""
    config = ConnectionConfig.resolve()

    async def go() -> Any:
        if config.local:
            await ensure_local_daemon(config)
        api = Api(config)
        try:
            return await api.request("POST", "/dashboard/links")
        finally:
            await api.aclose()

    try:
        link = asyncio.run(go())
    except NotFoundError:
        raise StockadeError(
            "this server has no dashboard sign-in links; if it is the local "
            "daemon from an older version, stop it and try again"
        ) from None
    if link.get("url"):
        return str(link["url"])
    if config.local:
        raise StockadeError(
            "the local daemon serves no dashboard ($STOCKADE_DASHBOARD_PORT is 'off' where it was started)"
        )
    return str(config.api_url).rstrip("/") + str(link["path"])


def dashboard() -> None:
    """Print a link that signs a browser in to the dashboard as you (once, within 10 min).

    Locally (no $STOCKADE_API_URL) the dashboard is the daemon's, on 127.0.0.1 (port 8801 or
    $STOCKADE_DASHBOARD_PORT); from another machine, forward that port first:
    ssh -L 8801:127.0.0.1:8801 HOST.
    """
    try:
        url = sign_in_link()
    except StockadeError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    print(url)

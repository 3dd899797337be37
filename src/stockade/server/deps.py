"""Dependencies shared by the routes."""

from __future__ import annotations

from fastapi import Request

from ..engine import Engine


def engine(request: Request) -> Engine:
    """The engine this server drives."""
    return request.app.state.engine  # type: ignore[no-any-return]

"""``stockade mcp``: the MCP server over stdio, for agent hosts that start it as a command.

It reaches Stockade as the SDK does: ``STOCKADE_API_URL`` and ``STOCKADE_API_KEY`` when set,
else the local daemon (started on demand, as root)."""

from __future__ import annotations

import logging
import sys

from .tools import Target, build_server


def serve_stdio() -> None:
    """Serve MCP on stdin/stdout until the host closes them; logs go to stderr."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    build_server(lambda ctx: Target()).run("stdio")

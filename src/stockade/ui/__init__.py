"""The web dashboard at ``/ui``: server-rendered pages over the HTTP API (through the SDK),
signed in with an API key, plus a terminal (xterm.js) over the PTY WebSocket.
See docs/dashboard-and-mcp.md."""

from .middleware import Dashboard

__all__ = ["Dashboard"]

"""Stockade as a Model Context Protocol server: tools over the Stockade SDK.

``stockade mcp`` serves it over stdio (:mod:`.stdio`); ``stockade serve`` serves it as
streamable HTTP at ``/mcp`` behind the server's API keys (:mod:`.http`). See docs/mcp.md.
"""

from .tools import Target, build_server

__all__ = ["Target", "build_server"]

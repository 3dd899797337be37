"""Stockade as a Model Context Protocol server: tools over the Stockade SDK.

``stockade mcp`` serves them over stdio (:mod:`.stdio`); ``stockade serve`` serves them as
streamable HTTP at ``/mcp`` behind the server's API keys (:mod:`.http`); the tools are in
:mod:`.tools`. See docs/dashboard-and-mcp.md.

(Nothing is imported here: the server imports :mod:`.http` at start, and the ``mcp`` package,
which takes about 0.4 s to import, is loaded only when ``/mcp`` is first used.)
"""

"""The one error of host operations."""

from __future__ import annotations


class HostError(Exception):
    """A host operation or a sandbox runtime failed; the message says which command and what
    it printed (``runtimes.DriverError`` is this class)."""

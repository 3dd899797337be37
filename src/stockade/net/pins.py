"""Which addresses the resolver gave each sandbox for each name, until their (clamped) TTL ends.

The egress proxy lets a connection named ``N`` (by SNI or ``Host``) through to address ``A``
only if this sandbox asked Stockade's resolver for ``N`` and got ``A`` back: a name cannot be
pointed at an address it does not resolve to, even an address the sandbox may reach otherwise.
"""

from __future__ import annotations

import time

#: Names remembered per sandbox; the oldest are forgotten first (a sandbox resolving names in
#: a loop cannot grow the engine's memory).
MAX_NAMES = 4096


class Pins:
    """sandbox id -> name -> address -> expiry (monotonic seconds)."""

    def __init__(self) -> None:
        self._pins: dict[str, dict[str, dict[str, float]]] = {}

    def add(self, sandbox_id: str, name: str, addresses: dict[str, int]) -> None:
        """Remember that ``name`` resolved to ``addresses`` ({address: seconds to live})."""
        now = time.monotonic()
        names = self._pins.setdefault(sandbox_id, {})
        entry = names.pop(name, {})  # re-inserted last: newest
        entry = {a: t for a, t in entry.items() if t > now}
        entry.update({a: now + ttl for a, ttl in addresses.items()})
        names[name] = entry
        while len(names) > MAX_NAMES:
            names.pop(next(iter(names)))

    def holds(self, sandbox_id: str, name: str, address: str) -> bool:
        """Whether ``name`` resolved to ``address`` for this sandbox and has not expired."""
        expiry = self._pins.get(sandbox_id, {}).get(name, {}).get(address)
        return expiry is not None and expiry > time.monotonic()

    def forget(self, sandbox_id: str) -> None:
        self._pins.pop(sandbox_id, None)

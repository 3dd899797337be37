"""End records: what is kept of a sandbox once it ended, and why it ended.

When a sandbox ends (killed by its owner, timed out, out of memory, pids limit, lost with its
host, an error) the engine keeps a :class:`~stockade.models.SandboxEnd` in
``<data>/ended/<id>.json``, with the tenant that owned it. Records are bounded: at most ``keep``
of them, none older than ``retention`` seconds; older ones go as new ones come. The sandbox
itself is gone (``GET /sandboxes/{id}`` answers 404); its end record is read through
``GET /sandboxes/{id}/end`` by its owner only. See docs/persistence.md ("Why a sandbox ended").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

from ..models import SandboxEnd

log = logging.getLogger("stockade.engine")

#: Defaults for the bounds (environment: ``STOCKADE_ENDED_KEEP``, ``STOCKADE_ENDED_RETENTION``).
DEFAULT_KEEP = 1000
DEFAULT_RETENTION = 24 * 3600.0
#: The words for each reason when nothing more precise is known.
MESSAGES = {
    "killed": "killed by the user",
    "timeout": "ended by its timeout",
    "out_of_memory": "out of memory",
    "pids_limit": "process limit reached",
    "disk_full": "disk full",
    "host_lost": "lost with its host (restart or crash)",
    "error": "error",
}


def default_keep() -> int:
    return int(os.environ.get("STOCKADE_ENDED_KEEP", DEFAULT_KEEP))


def default_retention() -> float:
    return float(os.environ.get("STOCKADE_ENDED_RETENTION", DEFAULT_RETENTION))


class EndRecords:
    """The end records of one engine, oldest first, bounded in count and age."""

    def __init__(self, directory: Path, keep: int, retention: float) -> None:
        self.directory = directory
        self.keep = max(0, keep)
        self.retention = retention
        self._items: OrderedDict[str, tuple[str | None, SandboxEnd]] = OrderedDict()

    def load(self) -> None:
        """Read what a previous run left; drop unreadable and out-of-bounds records."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        found = []
        for path in self.directory.glob("*.json"):
            try:
                data = json.loads(path.read_bytes())
                found.append((data.get("owner"), SandboxEnd.model_validate(data["end"])))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("unreadable end record %s removed", path)
                path.unlink(missing_ok=True)
        for owner, end in sorted(found, key=lambda item: item[1].ended_at):
            self._items[end.id] = (owner, end)
        self._prune()

    def add(self, owner: str | None, end: SandboxEnd) -> None:
        """Keep ``end`` (of a sandbox ``owner`` owned) and drop what the bounds no longer allow."""
        if self.keep == 0:
            return
        path = self.directory / f"{end.id}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"owner": owner, "end": end.model_dump(mode="json")}))
            os.replace(tmp, path)
        except OSError as exc:  # a full disk must not stop a kill
            log.warning("could not keep the end record of %s: %s", end.id, exc)
        self._items.pop(end.id, None)
        self._items[end.id] = (owner, end)
        self._prune()

    def get(self, sandbox_id: str) -> tuple[str | None, SandboxEnd] | None:
        """The owner and end record of ``sandbox_id``, while kept."""
        self._prune()
        return self._items.get(sandbox_id)

    def _prune(self) -> None:
        horizon = time.time() - self.retention
        while self._items and (
            len(self._items) > self.keep or next(iter(self._items.values()))[1].ended_at < horizon
        ):
            sandbox_id, _ = self._items.popitem(last=False)
            with contextlib.suppress(OSError):
                (self.directory / f"{sandbox_id}.json").unlink()

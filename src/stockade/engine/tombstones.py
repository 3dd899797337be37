"""End records: what is left of a sandbox once it ended, and why it ended.

When a sandbox ends (killed, timed out, out of memory, pids limit, crashed, gone with a host
restart) the engine keeps a small record of it in ``<data>/ended/<id>.json``: its public info with
``state="ended"``, ``reason`` and ``ended_at``. Records are bounded: at most ``keep`` of them, none
older than ``retention`` seconds (whichever is smaller); older ones are removed as new ones come.
See docs/persistence.md ("Why a sandbox ended").
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

from ..models import SandboxInfo

log = logging.getLogger("stockade.engine")

#: Why a sandbox ended (``SandboxInfo.reason`` when ``state == "ended"``).
END_REASONS = ("killed", "timeout", "out_of_memory", "pids_limit", "crashed", "host_restart")
#: Defaults for the bounds (environment: ``STOCKADE_ENDED_KEEP``, ``STOCKADE_ENDED_RETENTION``).
DEFAULT_KEEP = 1000
DEFAULT_RETENTION = 24 * 3600.0


def default_keep() -> int:
    return int(os.environ.get("STOCKADE_ENDED_KEEP", DEFAULT_KEEP))


def default_retention() -> float:
    return float(os.environ.get("STOCKADE_ENDED_RETENTION", DEFAULT_RETENTION))


class Tombstones:
    """The end records of one engine, oldest first, bounded in count and age."""

    def __init__(self, directory: Path, keep: int, retention: float) -> None:
        self.directory = directory
        self.keep = max(0, keep)
        self.retention = retention
        self._items: OrderedDict[str, SandboxInfo] = OrderedDict()

    def load(self) -> None:
        """Read what a previous run left; drop unreadable and out-of-bounds records."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        found = []
        for path in self.directory.glob("*.json"):
            try:
                found.append(SandboxInfo.model_validate_json(path.read_bytes()))
            except (OSError, ValueError):
                log.warning("unreadable end record %s removed", path)
                path.unlink(missing_ok=True)
        for info in sorted(found, key=lambda i: i.ended_at or 0.0):
            self._items[info.id] = info
        self._prune()

    def add(self, info: SandboxInfo) -> None:
        """Keep ``info`` (state "ended") and drop what the bounds no longer allow."""
        if self.keep == 0:
            return
        path = self.directory / f"{info.id}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(info.model_dump_json())
            os.replace(tmp, path)
        except OSError as exc:  # a full disk must not stop a kill
            log.warning("could not keep the end record of %s: %s", info.id, exc)
            return
        self._items.pop(info.id, None)
        self._items[info.id] = info
        self._prune()

    def get(self, sandbox_id: str) -> SandboxInfo | None:
        self._prune()
        return self._items.get(sandbox_id)

    def list(self) -> list[SandboxInfo]:
        """The kept records, oldest end first."""
        self._prune()
        return list(self._items.values())

    def _prune(self) -> None:
        horizon = time.time() - self.retention
        while self._items and (len(self._items) > self.keep
                               or (next(iter(self._items.values())).ended_at or 0) < horizon):
            sandbox_id, _ = self._items.popitem(last=False)
            with contextlib.suppress(OSError):
                (self.directory / f"{sandbox_id}.json").unlink()

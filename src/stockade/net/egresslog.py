"""Per-sandbox egress log: one JSON line per connection or refused DNS question, bounded on disk.

``<data>/net/sandboxes/<id>.egress.jsonl`` holds the newest entries; when it passes
``max_bytes`` it becomes ``<id>.egress.jsonl.1`` (the previous one is dropped), so a sandbox's
log never takes more than twice ``max_bytes``. Entries: ``time`` (Unix seconds), ``kind``
(``tls``, ``http``, ``tcp``, ``dns``), ``destination`` (``address:port``, or the resolver),
``name`` (SNI, ``Host`` or the DNS question; ``null`` when none was given), ``verdict``
(``allowed`` / ``denied``), ``reason``, ``bytes_out`` / ``bytes_in``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 1 << 20
MAX_NAME = 255  # names are clipped in the log (a tunnelling attempt must not fill it)


class EgressLog:
    """Appends to and reads the per-sandbox logs in ``directory``."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def path(self, sandbox_id: str) -> Path:
        return self.directory / f"{sandbox_id}.egress.jsonl"

    def write(self, sandbox_id: str, **entry: Any) -> None:
        """Append one entry (``time`` is added); rotate when the file is full."""
        name = entry.get("name")
        if isinstance(name, str) and len(name) > MAX_NAME:
            entry["name"] = name[:MAX_NAME] + "..."
        line = json.dumps({"time": round(time.time(), 3), **entry}, separators=(",", ":")) + "\n"
        path = self.path(sandbox_id)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size + len(line) > self.max_bytes:
                os.replace(path, path.with_name(path.name + ".1"))
        if not self.directory.is_dir():
            return  # the sandbox is gone (its directory with it)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)

    def read(self, sandbox_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, oldest first."""
        path = self.path(sandbox_id)
        lines: list[str] = []
        for part in (path.with_name(path.name + ".1"), path):
            with contextlib.suppress(FileNotFoundError):
                lines += part.read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines[-limit:] if limit > 0 else []:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def remove(self, sandbox_id: str) -> None:
        path = self.path(sandbox_id)
        for part in (path, path.with_name(path.name + ".1")):
            with contextlib.suppress(FileNotFoundError):
                part.unlink()

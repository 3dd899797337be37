"""The JavaScript and TypeScript executor: one persistent ``node`` per context, stdlib only.

The driver (:data:`.node_driver.SOURCE`) evaluates each cell in Node's global context, so
variables, functions and ``require``d modules persist. It speaks the bash executor's marker
protocol (output, then an end marker on stdout and stderr), with the cell's result or error
carried in the stdout marker, so this class reuses :class:`.bash.BashExecutor`'s reading.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import signal
from typing import Any

from .bash import BashExecutor
from .node_driver import SOURCE
from .wire import Failure

#: Language names (and aliases) served by this executor, and what they mean.
LANGUAGES = {
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "typescript": "typescript",
    "ts": "typescript",
}
#: Seconds node (and, for TypeScript, the compiler module) may take to load.
START_SECONDS = 60.0


class NodeExecutor(BashExecutor):
    """A persistent Node.js process running the driver; ``language`` picks JS or TS cells."""

    def __init__(self, language: str, cwd: str, workdir: str) -> None:
        self.language = LANGUAGES[language]
        super().__init__(cwd, workdir)

    def start(self) -> None:
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise Failure(
                f"{self.language} needs Node.js (`node`), which this image lacks; the "
                "code-interpreter template has it (rebuild one older than that with --force)"
            )
        driver = os.path.join(self.workdir, "stockade-node-driver.js")
        with open(driver, "w", encoding="utf-8") as f:
            f.write(SOURCE)
        self.token = os.urandom(8).hex()
        self._spawn([node, driver, self.language], {**os.environ, "STOCKADE_MARK": self.token})
        self.run_id = "0"
        self._reset()
        self._await_ready(self.language, START_SECONDS)

    def execute(self, code: str, env: dict[str, str] | None = None) -> None:
        """Run the cell. ``env`` is not applied: the engine refuses per-execution envs for
        JavaScript and TypeScript contexts before they get here."""
        self.count += 1
        self.run_id = str(self.count)
        self._reset()
        self._send(json.dumps({"id": self.run_id, "code": code}) + "\n")

    def outcome(self) -> list[dict[str, Any]]:
        """The cell's result or error, as the driver put it in its end marker."""
        try:
            events = json.loads(base64.b64decode(self.marker[2], validate=True))
        except (IndexError, ValueError, binascii.Error):
            return []
        return [e for e in events if isinstance(e, dict) and e.get("type") in ("result", "error")]

    def interrupt(self) -> None:
        """SIGINT to node and its children; the driver ends the cell itself."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

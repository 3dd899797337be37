"""What the server says: JSON-line events on stdout, valid UTF-8, and the limits they obey.

Events: first ``{"type": "ready", "protocol", "language", "pid"}`` (or ``{"type": "fatal",
"message"}``), then per execution ``stdout``/``stderr`` (``text``), ``result`` (``data``: MIME
bundle, ``is_main_result``), ``error`` (``name``, ``value``, ``traceback``) and one ``end``
(``status``, ``execution_count``), each with the execution's ``id``. Strings are sent as valid
UTF-8: undecodable bytes and lone surrogates become U+FFFD.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: The version of this protocol; the engine refuses a server that speaks another.
PROTOCOL = 1
#: Bytes of output one execution may send; past that the rest is dropped and the cell interrupted.
MAX_OUTPUT = 16 << 20
#: Largest text of one stream event; longer output is split.
CHUNK_CHARS = 256 << 10
#: Seconds a cell gets to stop after an interrupt before its kernel or shell is restarted.
INTERRUPT_GRACE = 3.0


class Failure(Exception):
    """The context cannot start or go on; the message says why."""


def clean(value: Any) -> Any:
    """Make every string in ``value`` valid UTF-8 (lone surrogates become U+FFFD)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value


def emit(event: dict[str, Any]) -> None:
    """Write one event as a JSON line on stdout."""
    line = json.dumps(clean(event), ensure_ascii=False, separators=(",", ":")) + "\n"
    sys.stdout.buffer.write(line.encode("utf-8"))
    sys.stdout.buffer.flush()

"""The Stockade agent protocol: typed, versioned, standard library only.

One byte stream (a unix socket on the container tiers, a virtio-serial port in a microVM)
carries many independent *streams*. Every frame is::

    +----------------+----------------+--------+-----------------------+
    | length: u32 BE | stream: u32 BE | kind:u8| payload (length bytes)|
    +----------------+----------------+--------+-----------------------+

``length`` never exceeds :data:`MAX_PAYLOAD`. A peer that receives a longer frame, or an unknown
kind, cannot resynchronise the byte stream and closes the whole connection (the agent then waits
for the next one). A well-formed frame with bad content (invalid JSON, an unknown method, bad
parameters) ends only its own stream, with an ``END`` frame carrying an error.

The host opens a stream with ``OPEN`` (JSON ``{"method", "params"}``); the agent answers with
any number of ``EVENT`` (JSON) and ``DATA`` frames and exactly one ``END`` frame (JSON
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code", "message"}}``). ``DATA``
payloads start with one channel byte (:class:`Channel`). The agent sends ``DATA`` only within
the credit the host granted to that stream (:data:`INITIAL_WINDOW`, topped up by ``WINDOW``
frames), so a slow reader never makes either side buffer without bound.

See docs/protocol.md for the methods and their parameters.
"""

from __future__ import annotations

import enum
import json
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">IIB")
MAX_PAYLOAD = 1 << 20
#: Bytes of DATA the agent may send on a new stream before the host grants more.
INITIAL_WINDOW = 4 << 20
#: Bytes the host consumes before it sends a WINDOW frame back.
WINDOW_UPDATE_THRESHOLD = 256 << 10
#: Size of the chunks the agent reads from pipes and files.
CHUNK = 64 << 10
#: Seconds between keepalive events on a silent process stream.
KEEPALIVE_SECONDS = 15.0
#: Output a process may write (stdout + stderr) before the agent kills it, unless overridden.
DEFAULT_MAX_OUTPUT = 64 << 20


class Kind(enum.IntEnum):
    """What a frame is."""

    OPEN = 1  # host -> agent: JSON {"method": str, "params": dict}
    DATA = 2  # both ways: channel byte + raw bytes
    EVENT = 3  # agent -> host: JSON event
    END = 4  # agent -> host: JSON outcome; the stream is over
    CLOSE = 5  # host -> agent: the host has nothing more to send on this stream (stdin EOF)
    CANCEL = 6  # host -> agent: abandon the stream (the agent answers with END)
    WINDOW = 7  # host -> agent: u32 BE more bytes of DATA credit


class Channel(enum.IntEnum):
    """First byte of a DATA payload."""

    BODY = 0  # stdin, file contents
    STDOUT = 1
    STDERR = 2
    PTY = 3


class Method(str, enum.Enum):
    """Method names, owned by the agent."""

    HELLO = "hello"
    PROCESS_START = "process.start"
    PROCESS_CONNECT = "process.connect"
    PROCESS_LIST = "process.list"
    PROCESS_INPUT = "process.input"
    PROCESS_CLOSE_STDIN = "process.close_stdin"
    PROCESS_SIGNAL = "process.signal"
    PROCESS_RESIZE = "process.resize"
    FS_STAT = "fs.stat"
    FS_LIST = "fs.list"
    FS_MKDIR = "fs.mkdir"
    FS_REMOVE = "fs.remove"
    FS_RENAME = "fs.rename"
    FS_READ = "fs.read"
    FS_WRITE = "fs.write"
    FS_WATCH = "fs.watch"
    SYS_SEED = "sys.seed"
    PORT_CONNECT = "port.connect"  # a TCP connection inside the sandbox (ports.py)
    SYS_SUSPEND = "sys.suspend"  # let go of host sockets before a checkpoint (listener.py)
    SYS_SYNC = "sys.sync"  # write the sandbox kernel's dirty pages to disk (before stop or save)
    SYS_SETUP = "sys.setup"  # apply a microVM's settings share again (after a template restore)
    SYS_LIMITS = "sys.limits"  # a microVM guest's limits for its commands (limits.py)
    SYS_STATS = "sys.stats"  # what those limits killed or refused


class ErrorCode(str, enum.Enum):
    """Stable error codes in END frames."""

    BAD_REQUEST = "bad_request"  # malformed frame content or parameters
    UNKNOWN_METHOD = "unknown_method"
    NOT_FOUND = "not_found"  # path, process or user does not exist
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    NOT_A_DIRECTORY = "not_a_directory"
    IS_A_DIRECTORY = "is_a_directory"
    NOT_EMPTY = "not_empty"
    NO_SPACE = "no_space"  # disk quota reached
    TOO_LARGE = "too_large"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """The peer broke the framing; the connection cannot continue."""


def encode(kind: Kind, stream: int, payload: bytes = b"") -> bytes:
    """Return one frame. Raises ValueError for an oversized payload."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), stream, kind) + payload


def encode_json(kind: Kind, stream: int, message: Any) -> bytes:
    """Return one frame whose payload is ``message`` as compact JSON."""
    return encode(kind, stream, json.dumps(message, separators=(",", ":")).encode())


def encode_data(stream: int, channel: Channel, data: bytes) -> bytes:
    """Return a DATA frame for ``channel``."""
    return encode(Kind.DATA, stream, bytes((channel,)) + data)


def parse_header(header: bytes) -> tuple[int, int, Kind]:
    """Validate a frame header; return (length, stream, kind) or raise ProtocolError."""
    length, stream, kind = HEADER.unpack(header)
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD} byte limit")
    try:
        return length, stream, Kind(kind)
    except ValueError:
        raise ProtocolError(f"unknown frame kind {kind}") from None


def decode_json(payload: bytes) -> Any:
    """Parse a JSON payload; raise ValueError with a readable message if it is not JSON."""
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("payload is JSON nested too deeply") from None


def ok(result: Any = None) -> dict[str, Any]:
    """The END payload of a successful stream."""
    return {"ok": True, "result": result}


def error(code: ErrorCode, message: str) -> dict[str, Any]:
    """The END payload of a failed stream."""
    return {"ok": False, "error": {"code": code.value, "message": message}}

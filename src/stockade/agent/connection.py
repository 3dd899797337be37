"""One connection between the host and the agent: frames in, streams out (agent side)."""

from __future__ import annotations

import queue
import socket
import threading
import time

from . import protocol as p

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any, BinaryIO, Callable


class AgentError(Exception):
    """An error a handler reports to the host as the END of its stream."""

    def __init__(self, code: p.ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Stream:
    """The agent's side of one stream: what the host sent, and how to answer."""

    def __init__(self, conn: "Connection", stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        #: Items from the host: ("data", bytes), ("close", None), ("cancel", None), or
        #: items that other threads post to the handler ("exited", info).
        self.inbox: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._credit = p.INITIAL_WINDOW
        self._credit_cond = threading.Condition()
        self._ended = False
        self._received = 0

    @property
    def ended(self) -> bool:
        return self._ended

    def grant(self, amount: int) -> None:
        with self._credit_cond:
            self._credit += amount
            self._credit_cond.notify_all()

    def send_event(self, event: dict[str, Any]) -> None:
        if not self._ended:
            self.conn.send(p.encode_json(p.Kind.EVENT, self.id, event))

    def send_data(self, channel: p.Channel, data: bytes) -> bool:
        """Send ``data``, waiting for credit; return False if the stream is gone."""
        view = memoryview(data)
        while view:
            with self._credit_cond:
                while self._credit <= 0 and not self._ended and not self.conn.closed:
                    self._credit_cond.wait(1.0)
                if self._ended or self.conn.closed:
                    return False
                n = min(len(view), self._credit, p.MAX_PAYLOAD - 1)
                self._credit -= n
            self.conn.send(p.encode_data(self.id, channel, bytes(view[:n])))
            view = view[n:]
        return True

    def consumed(self, amount: int) -> None:
        """Tell the host we processed ``amount`` bytes it sent, so it may send more."""
        self._received += amount
        if self._received >= p.WINDOW_UPDATE_THRESHOLD:
            self.conn.send(p.encode(p.Kind.WINDOW, self.id, self._received.to_bytes(4, "big")))
            self._received = 0

    def end(self, outcome: dict[str, Any]) -> None:
        if self._ended:
            return
        self._ended = True
        with self._credit_cond:
            self._credit_cond.notify_all()
        self.conn.send(p.encode_json(p.Kind.END, self.id, outcome))
        self.conn.forget(self.id)


if TYPE_CHECKING:
    #: What serves one method: the stream and its parameters in, the result out.
    Handler = Callable[[Stream, dict[str, Any]], Any]


class Connection:
    """Reads frames from the host and runs one handler thread per opened stream."""

    def __init__(
        self, reader: BinaryIO, writer: Callable[[bytes], None], handlers: dict[str, Handler]
    ) -> None:
        self._reader = reader
        self._write = writer
        self._handlers = handlers
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._lock = threading.Lock()
        self.closed = False

    def send(self, frame: bytes) -> None:
        with self._send_lock:
            if self.closed:
                return
            try:
                self._write(frame)
            except OSError:
                self.closed = True

    def forget(self, stream_id: int) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._reader.read(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def serve(self) -> None:
        """Serve until the host hangs up or breaks the framing."""
        try:
            while True:
                length, stream_id, kind = p.parse_header(self._read_exact(p.HEADER.size))
                self._dispatch(stream_id, kind, self._read_exact(length) if length else b"")
        except (EOFError, OSError, p.ProtocolError):
            pass
        finally:
            self.closed = True
            with self._lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for stream in streams:
                stream.inbox.put(("cancel", None))
                stream.grant(0)

    def _dispatch(self, stream_id: int, kind: p.Kind, payload: bytes) -> None:
        if kind is p.Kind.OPEN:
            self._open(stream_id, payload)
            return
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is None:
            return  # a late frame for a finished stream: harmless, ignore
        if kind is p.Kind.DATA:
            stream.inbox.put(("data", payload[1:]))
        elif kind is p.Kind.CLOSE:
            stream.inbox.put(("close", None))
        elif kind is p.Kind.CANCEL:
            stream.inbox.put(("cancel", None))
        elif kind is p.Kind.WINDOW and len(payload) == 4:
            stream.grant(int.from_bytes(payload, "big"))
        else:
            stream.end(p.error(p.ErrorCode.BAD_REQUEST, f"unexpected {kind.name} frame"))

    def _open(self, stream_id: int, payload: bytes) -> None:
        stream = Stream(self, stream_id)
        with self._lock:
            existing = self._streams.get(stream_id)
            if existing is None:
                self._streams[stream_id] = stream
        if existing is not None:  # ended outside the lock: end() takes it to forget the stream
            return existing.end(p.error(p.ErrorCode.BAD_REQUEST, f"stream {stream_id} is already open"))
        try:
            message = p.decode_json(payload)
            if not isinstance(message, dict) or not isinstance(message.get("method"), str):
                raise ValueError("OPEN needs a JSON object with a string 'method'")
            params = message.get("params") or {}
            if not isinstance(params, dict):
                raise ValueError("'params' must be a JSON object")
        except ValueError as exc:
            return stream.end(p.error(p.ErrorCode.BAD_REQUEST, str(exc)))
        handler = self._handlers.get(message["method"])
        if handler is None:
            return stream.end(p.error(p.ErrorCode.UNKNOWN_METHOD, f"unknown method {message['method']!r}"))
        for attempt in range(2):
            try:
                threading.Thread(target=run_handler, args=(handler, stream, params), daemon=True).start()
                return None
            except RuntimeError:  # "can't start new thread": the sandbox is at its pids limit
                # Kill the fork bomb (the biggest process group the agent started), then retry.
                if attempt or PIDS_RELIEF is None or not PIDS_RELIEF():
                    break
                time.sleep(0.05)
        stream.end(
            p.error(
                p.ErrorCode.INTERNAL,
                "the agent cannot start a thread: the "
                "sandbox has reached its process limit (pids); try again later",
            )
        )


#: Set by the agent's main: kills the process group that fills the pids limit (a fork bomb);
#: whether it killed one.
PIDS_RELIEF: Callable[[], bool] | None = None


def run_handler(handler: Handler, stream: Stream, params: dict[str, Any]) -> None:
    """Run one handler and turn its result or exception into the END frame."""
    try:
        result = handler(stream, params)
    except AgentError as exc:
        stream.end(p.error(exc.code, exc.message))
    except OSError as exc:
        stream.end(p.error(*errno_to_code(exc)))
    except (ValueError, TypeError, KeyError) as exc:
        stream.end(p.error(p.ErrorCode.BAD_REQUEST, f"bad parameters: {exc}"))
    except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the agent
        stream.end(p.error(p.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
    else:
        stream.end(p.ok(result))


def errno_to_code(exc: OSError) -> tuple[p.ErrorCode, str]:
    """Map an OSError to a protocol error code and a readable message."""
    import errno

    codes = {
        errno.ENOENT: p.ErrorCode.NOT_FOUND,
        errno.EEXIST: p.ErrorCode.ALREADY_EXISTS,
        errno.EACCES: p.ErrorCode.PERMISSION_DENIED,
        errno.EPERM: p.ErrorCode.PERMISSION_DENIED,
        errno.EROFS: p.ErrorCode.PERMISSION_DENIED,
        errno.ENOTDIR: p.ErrorCode.NOT_A_DIRECTORY,
        errno.EISDIR: p.ErrorCode.IS_A_DIRECTORY,
        errno.ENOTEMPTY: p.ErrorCode.NOT_EMPTY,
        errno.ENOSPC: p.ErrorCode.NO_SPACE,
        errno.EDQUOT: p.ErrorCode.NO_SPACE,
        errno.EFBIG: p.ErrorCode.TOO_LARGE,
    }
    code = codes.get(exc.errno or 0, p.ErrorCode.INTERNAL)
    where = f": {exc.filename}" if exc.filename else ""
    return code, f"{exc.strerror or exc}{where}"


def serve_socket(sock: socket.socket, handlers: dict[str, Handler]) -> None:
    """Serve one accepted socket connection until it closes."""
    reader: Any = sock.makefile("rb", buffering=1 << 16)
    try:
        Connection(reader, sock.sendall, handlers).serve()
    finally:
        reader.close()
        sock.close()

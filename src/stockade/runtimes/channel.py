"""The host's side of the agent channel: many streams over one untrusted byte stream.

Nothing the agent sends is trusted: frame sizes are checked before reading, JSON is validated,
DATA beyond the credit we granted is a protocol violation that closes the channel, and every
wait has a way out (the channel closing wakes every stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from typing import Any, AsyncIterator

from ..agent import protocol as p


class ChannelClosed(Exception):
    """The agent went away (or broke the protocol) while a stream was open."""


class AgentCallError(Exception):
    """The agent ended a stream with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Data:
    """Bytes from the agent on one channel (stdout, stderr, pty, body)."""

    channel: p.Channel
    data: bytes


@dataclass(frozen=True, slots=True)
class Event:
    """A JSON event from the agent."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class End:
    """The last frame of a stream: the result, or the error."""

    ok: bool
    result: Any = None
    code: str = ""
    message: str = ""

    def unwrap(self) -> Any:
        if not self.ok:
            raise AgentCallError(self.code, self.message)
        return self.result


Item = Data | Event | End


class HostStream:
    """One stream as the host sees it: iterate for what comes, send what goes."""

    def __init__(self, channel: "AgentChannel", stream_id: int) -> None:
        self._channel = channel
        self.id = stream_id
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()
        self._granted_unused = p.INITIAL_WINDOW  # credit the agent may still use
        self._consumed = 0
        self._send_credit = p.INITIAL_WINDOW
        self._credit_event = asyncio.Event()
        self.done = False

    # -- called by the channel's reader ---------------------------------------------------
    def _deliver(self, item: Item | None) -> None:
        if isinstance(item, Data):
            self._granted_unused -= len(item.data)
            if self._granted_unused < 0:
                raise p.ProtocolError(f"agent sent DATA beyond its credit on stream {self.id}")
        self._queue.put_nowait(item)

    def _grant_send(self, amount: int) -> None:
        self._send_credit += amount
        self._credit_event.set()

    # -- the stream's user ------------------------------------------------------------------
    async def next(self) -> Item:
        """The next item; raises ChannelClosed if the agent vanished first."""
        item = await self._queue.get()
        if item is None:
            self.done = True
            raise ChannelClosed("the sandbox agent closed the channel")
        if isinstance(item, End):
            self.done = True
            self._channel._forget(self.id)
        elif isinstance(item, Data):
            self._consumed += len(item.data)
            if self._consumed >= p.WINDOW_UPDATE_THRESHOLD:
                amount, self._consumed = self._consumed, 0
                self._granted_unused += amount
                await self._channel._send(p.encode(p.Kind.WINDOW, self.id, amount.to_bytes(4, "big")))
        return item

    async def __aiter__(self) -> AsyncIterator[Item]:
        while not self.done:
            yield await self.next()

    async def result(self) -> Any:
        """Drain to the END frame and return its result (raising its error)."""
        while True:
            item = await self.next()
            if isinstance(item, End):
                return item.unwrap()

    async def send(self, data: bytes, channel: p.Channel = p.Channel.BODY) -> None:
        """Send bytes to the agent, in frames, within the credit it gave us."""
        view = memoryview(data)
        while view:
            while self._send_credit <= 0:
                if self._channel.closed:
                    raise ChannelClosed("the sandbox agent closed the channel")
                self._credit_event.clear()
                await self._credit_event.wait()
            n = min(len(view), self._send_credit, p.MAX_PAYLOAD - 1)
            self._send_credit -= n
            await self._channel._send(p.encode_data(self.id, channel, bytes(view[:n])))
            view = view[n:]

    async def close_send(self) -> None:
        await self._channel._send(p.encode(p.Kind.CLOSE, self.id))

    async def cancel(self) -> None:
        if not self.done and not self._channel.closed:
            with contextlib.suppress(ChannelClosed, ConnectionError):
                await self._channel._send(p.encode(p.Kind.CANCEL, self.id))


class AgentChannel:
    """A connection to one sandbox's agent, multiplexing streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._streams: dict[int, HostStream] = {}
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self.closed = False
        self.close_reason = ""
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect_unix(cls, path: str) -> "AgentChannel":
        reader, writer = await asyncio.open_unix_connection(path, limit=p.MAX_PAYLOAD + 64)
        return cls(reader, writer)

    async def _send(self, frame: bytes) -> None:
        if self.closed:
            raise ChannelClosed(self.close_reason or "channel closed")
        async with self._write_lock:
            try:
                self._writer.write(frame)
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                raise ChannelClosed(f"the channel to the sandbox agent failed: {exc}") from None

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    async def open(self, method: p.Method | str, params: dict[str, Any] | None = None) -> HostStream:
        """Open a stream calling ``method``."""
        stream = HostStream(self, next(self._ids))
        self._streams[stream.id] = stream
        name = method.value if isinstance(method, p.Method) else method
        try:
            await self._send(p.encode_json(p.Kind.OPEN, stream.id, {"method": name, "params": params or {}}))
        except BaseException:
            self._forget(stream.id)
            raise
        return stream

    async def call(self, method: p.Method | str, params: dict[str, Any] | None = None) -> Any:
        """Open a stream, wait for its END, return the result."""
        stream = await self.open(method, params)
        return await stream.result()

    async def _read_loop(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(p.HEADER.size)
                length, stream_id, kind = p.parse_header(header)
                payload = await self._reader.readexactly(length) if length else b""
                self._dispatch(stream_id, kind, payload)
        except asyncio.IncompleteReadError:
            self.close_reason = "the sandbox agent closed the channel"
        except (p.ProtocolError, ValueError) as exc:
            self.close_reason = f"the sandbox agent broke the protocol: {exc}"
        except (ConnectionError, OSError) as exc:
            self.close_reason = f"the channel to the sandbox agent failed: {exc}"
        finally:
            self._shutdown()

    def _dispatch(self, stream_id: int, kind: p.Kind, payload: bytes) -> None:
        stream = self._streams.get(stream_id)
        if kind in (p.Kind.OPEN, p.Kind.CLOSE, p.Kind.CANCEL):
            raise p.ProtocolError(f"the agent may not send {kind.name}")
        if stream is None:
            return  # a stream we cancelled and forgot; late frames are harmless
        if kind is p.Kind.DATA:
            if not payload:
                raise p.ProtocolError("empty DATA frame")
            try:
                channel = p.Channel(payload[0])
            except ValueError:
                raise p.ProtocolError(f"unknown DATA channel {payload[0]}") from None
            stream._deliver(Data(channel, payload[1:]))
        elif kind is p.Kind.WINDOW:
            if len(payload) != 4:
                raise p.ProtocolError("WINDOW frame must carry 4 bytes")
            stream._grant_send(int.from_bytes(payload, "big"))
        else:
            body = p.decode_json(payload)
            if not isinstance(body, dict):
                raise p.ProtocolError(f"{kind.name} payload must be a JSON object")
            if kind is p.Kind.EVENT:
                stream._deliver(Event(body))
            else:
                stream._deliver(_parse_end(body))

    def _shutdown(self) -> None:
        self.closed = True
        for stream in list(self._streams.values()):
            stream._queue.put_nowait(None)
            stream._credit_event.set()
        self._streams.clear()
        with contextlib.suppress(Exception):
            self._writer.close()

    async def aclose(self) -> None:
        """Close the connection; open streams raise ChannelClosed."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._shutdown()


def _parse_end(body: dict[str, Any]) -> End:
    if body.get("ok") is True:
        return End(True, body.get("result"))
    err = body.get("error")
    if not isinstance(err, dict):
        raise p.ProtocolError("END without ok or error")
    return End(False, code=str(err.get("code", "internal"))[:64], message=str(err.get("message", ""))[:4096])

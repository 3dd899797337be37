"""The host's parser of agent frames (runtimes/channel.AgentChannel) against a lying agent:
whatever arrives, no exception escapes the reader, nothing hangs, and a pending call ends."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.agent import protocol as p
from stockade.runtimes.channel import AgentCallError, AgentChannel, ChannelClosed

DEADLINE = 5.0


async def _pair() -> tuple[AgentChannel, socket.socket]:
    """A channel whose agent end is a raw socket the test writes to."""
    host, agent = socket.socketpair()
    agent.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=host, limit=p.MAX_PAYLOAD + 64)
    return AgentChannel(reader, writer), agent


async def _send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


def _frame(kind: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">IIB", len(payload), stream, kind) + payload


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
payloads = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"ok": st.one_of(st.booleans(), json_values), "error": json_values, "result": json_values}
    ).map(lambda v: json.dumps(v).encode()),
)
frames = st.builds(
    _frame, kind=st.integers(0, 9), stream=st.sampled_from([0, 1, 2, 2**32 - 1]), payload=payloads
)
raw_bytes = st.binary(min_size=1, max_size=256)


async def _feed(chunks: list[bytes]) -> None:
    channel, agent = await _pair()
    try:
        call = asyncio.ensure_future(channel.call("hello"))  # stream 1, waiting for its END
        for chunk in chunks:
            await _send(agent, chunk)
        await asyncio.sleep(0)
        agent.close()  # the agent goes away: whatever was pending must end now
        try:
            await asyncio.wait_for(call, DEADLINE)
        except (AgentCallError, ChannelClosed):
            pass
        await asyncio.wait_for(asyncio.shield(channel._task), DEADLINE)
        assert channel._task.exception() is None, "the reader crashed instead of closing"
        assert channel.closed
    finally:
        agent.close()
        await channel.aclose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=12))
def test_random_frames_never_crash_or_hang(chunks: list[bytes]) -> None:
    asyncio.run(asyncio.wait_for(_feed(chunks), DEADLINE * 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(raw_bytes, max_size=8))
def test_random_bytes_never_crash_or_hang(chunks: list[bytes]) -> None:
    asyncio.run(asyncio.wait_for(_feed(chunks), DEADLINE * 3))


async def _closed_by(frames_from_agent: list[bytes]) -> str:
    """Send frames while a call is pending; return why the channel closed (without EOF)."""
    channel, agent = await _pair()
    try:
        call = asyncio.ensure_future(channel.call("hello"))
        for frame in frames_from_agent:
            await _send(agent, frame)
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(call, DEADLINE)
        assert channel.closed
        return channel.close_reason
    finally:
        agent.close()
        await channel.aclose()


def test_data_beyond_the_granted_credit_closes_the_channel() -> None:
    async def run() -> None:
        channel, agent = await _pair()
        try:
            stream = await channel.open("fs.read", {"path": "/big"})  # opened, never read
            chunk = p.encode_data(stream.id, p.Channel.BODY, b"x" * (p.MAX_PAYLOAD - 1))
            sender = asyncio.ensure_future(
                _send(agent, chunk * (p.INITIAL_WINDOW // (p.MAX_PAYLOAD - 1) + 1))
            )
            await asyncio.wait_for(asyncio.shield(channel._task), DEADLINE)
            assert channel.closed and "credit" in channel.close_reason
            with pytest.raises(ChannelClosed):
                while True:
                    await asyncio.wait_for(stream.next(), DEADLINE)
            sender.cancel()
        finally:
            agent.close()
            await channel.aclose()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (struct.pack(">IIB", p.MAX_PAYLOAD + 1, 1, p.Kind.DATA), "exceeds"),
        (_frame(42, 1, b"{}"), "unknown frame kind"),
        (_frame(p.Kind.OPEN, 1, b"{}"), "may not send OPEN"),
        (_frame(p.Kind.DATA, 1, b""), "empty DATA"),
        (_frame(p.Kind.DATA, 1, b"\x09abc"), "unknown DATA channel"),
        (_frame(p.Kind.WINDOW, 1, b"\x01"), "4 bytes"),
        (_frame(p.Kind.END, 1, b"[1]"), "JSON object"),
        (_frame(p.Kind.END, 1, b"{nope"), "not JSON"),
        (_frame(p.Kind.END, 1, b"[" * 50_000), "nested too deeply"),
        (_frame(p.Kind.END, 1, b'{"ok": false}'), "END without ok or error"),
    ],
)
def test_each_violation_closes_the_channel_with_a_reason(frame: bytes, why: str) -> None:
    assert why in asyncio.run(_closed_by([frame]))


def test_a_lying_end_is_bounded_and_a_good_one_is_returned() -> None:
    async def run() -> None:
        channel, agent = await _pair()
        try:
            first = asyncio.ensure_future(channel.call("hello"))
            second = asyncio.ensure_future(channel.call("hello"))
            await asyncio.sleep(0)
            lie = {"ok": False, "error": {"code": "x" * 10_000, "message": "m" * 100_000}}
            await _send(agent, p.encode_json(p.Kind.END, 1, lie))
            await _send(agent, p.encode_json(p.Kind.END, 2, p.ok({"protocol": 1})))
            with pytest.raises(AgentCallError) as info:
                await asyncio.wait_for(first, DEADLINE)
            assert len(info.value.code) <= 64 and len(info.value.message) <= 4096
            assert await asyncio.wait_for(second, DEADLINE) == {"protocol": 1}
            assert not channel.closed
        finally:
            agent.close()
            await channel.aclose()

    asyncio.run(run())

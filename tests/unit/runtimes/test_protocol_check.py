"""The host refuses an agent of another protocol version, with a message that says what to do."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from stockade.agent import protocol
from stockade.agent.connection import serve_socket
from stockade.runtimes.base import ProtocolMismatch, greet
from stockade.runtimes.channel import AgentChannel


def _serve_once(path: Path, version: Any) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        listener.close()
        with conn:
            serve_socket(conn, {"hello": lambda stream, params: {"protocol": version}})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def test_a_matching_agent_is_accepted(tmp_path: Path) -> None:
    thread = _serve_once(tmp_path / "a.sock", protocol.PROTOCOL_VERSION)
    channel = await AgentChannel.connect_unix(str(tmp_path / "a.sock"))
    await greet(channel, 5)
    assert not channel.closed
    await channel.aclose()
    thread.join(5)


@pytest.mark.parametrize("version", [protocol.PROTOCOL_VERSION + 1, 0, "1", None])
async def test_another_protocol_version_is_refused(tmp_path: Path, version: Any) -> None:
    thread = _serve_once(tmp_path / "a.sock", version)
    channel = await AgentChannel.connect_unix(str(tmp_path / "a.sock"))
    with pytest.raises(ProtocolMismatch, match="speaks protocol .* this host speaks 1"):
        await greet(channel, 5)
    assert channel.closed
    thread.join(5)

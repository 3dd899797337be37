"""LSP framing as the Daytona language-server adapter speaks it: messages out, and messages
read back from a stream that may start in the middle of one, split anywhere."""

from __future__ import annotations

import json

import pytest

from stockade.compat.daytona.lsp import MAX_HEADER, MAX_MESSAGE, Reader, _item, _symbols, frame


def test_frames_round_trip_split_anywhere_and_joined() -> None:
    messages = [{"id": i, "result": {"text": "é\r\n" * i, "n": i}} for i in range(5)]
    wire = b"".join(frame(m) for m in messages)
    assert wire.startswith(b"Content-Length: ")
    for step in (1, 3, 7, len(wire)):
        reader, got = Reader(), []
        for start in range(0, len(wire), step):
            got += reader.feed(wire[start : start + step])
        assert [m["id"] for m in got] == list(range(5)) and got[4]["result"]["text"] == "é\r\n" * 4


def test_a_stream_joined_mid_message_skips_to_the_next_header() -> None:
    first = frame({"method": "window/logMessage", "params": {"message": "Content-Length: 99"}})
    second = frame({"id": "stockade-1", "result": [1]})
    reader = Reader()
    assert reader.feed(first[len(first) // 2 :] + second) == [
        {"jsonrpc": "2.0", "id": "stockade-1", "result": [1]}
    ]
    body = json.loads(second.split(b"\r\n\r\n", 1)[1])
    assert body["id"] == "stockade-1"


def test_answers_become_daytona_models() -> None:
    assert _item({"label": "area", "kind": 3, "documentation": "doc"}) == {
        "label": "area",
        "kind": 3,
        "documentation": {"kind": "plaintext", "value": "doc"},
    }
    assert _item({"kind": 3}) is None
    nested = [
        {
            "name": "Circle",
            "kind": 5,
            "range": {"start": {"line": 4, "character": 0}, "end": {"line": 7, "character": 0}},
            "selectionRange": {"start": {"line": 4, "character": 6}, "end": {"line": 4, "character": 12}},
            "children": [{"name": "radius", "kind": 7, "range": {}}],
        }
    ]
    flat = _symbols(nested, "file:///p/a.py")
    assert [s["name"] for s in flat] == ["Circle", "radius"]
    assert flat[0]["location"] == {
        "uri": "file:///p/a.py",
        "range": {"start": {"line": 4, "character": 6}, "end": {"line": 4, "character": 12}},
    }
    assert flat[1]["location"]["range"]["start"] == {"line": 0, "character": 0}


def test_what_a_server_sends_is_bounded() -> None:
    """The server is the sandbox's program: it cannot make the front end buffer without end."""
    reader = Reader()
    for _ in range(1000):
        assert reader.feed(b"x" * 10_000) == []  # no header, ever
    assert len(reader.buffer) <= MAX_HEADER
    assert reader.feed(frame({"id": 1, "result": None})) == [{"jsonrpc": "2.0", "id": 1, "result": None}]
    with pytest.raises(ValueError, match="at most"):
        reader.feed(b"Content-Length: %d\r\n\r\n{" % (MAX_MESSAGE + 1))

"""The E2B adapter's pure parts: Connect framing, E2B names, and signed-URL checking against the
SDK's own signing code."""

from __future__ import annotations

import asyncio
import json

import pytest
from e2b.sandbox.signature import get_signature
from hypothesis import given
from hypothesis import strategies as st

from stockade.compat.e2b import gate, wire
from stockade.compat.e2b.gate import E2BError
from stockade.compat.e2b.template_spec import BuildStart
from stockade.compat.e2b.connect import ConnectError, Message, envelope, parse
from stockade.engine import Conflict, InvalidRequest, SandboxUnavailable


class Stat(Message):
    path: str
    include_entry: bool = False


def test_messages_take_camel_and_proto_names_and_ignore_unknown_fields() -> None:
    assert parse(Stat, b'{"path": "/a", "includeEntry": true, "new": 1}').include_entry
    assert parse(Stat, b'{"path": "/a", "include_entry": true}').include_entry


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"path": 7}', b"{}"])
def test_bad_messages_are_invalid_argument_naming_the_problem(body: bytes) -> None:
    with pytest.raises(ConnectError) as failed:
        parse(Stat, body)
    assert failed.value.code == "invalid_argument" and failed.value.message


def test_envelope_framing() -> None:
    framed = envelope({"error": {"code": "not_found"}}, 0x02)
    assert framed[0] == 0x02 and int.from_bytes(framed[1:5], "big") == len(framed) - 5
    assert json.loads(framed[5:]) == {"error": {"code": "not_found"}}


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (InvalidRequest("x"), "invalid_argument", 400),
        (Conflict("x"), "already_exists", 409),
        (SandboxUnavailable("x"), "unavailable", 503),
    ],
)
def test_engine_errors_map_to_connect_codes(error: Exception, code: str, status: int) -> None:
    mapped = ConnectError.of(error)  # type: ignore[arg-type]
    assert (mapped.code, mapped.response().status_code) == (code, status)


def test_create_body_becomes_a_stockade_spec() -> None:
    body = wire.NewSandbox.model_validate(
        {
            "templateID": "code-interpreter-v1",
            "timeout": 60,
            "envVars": {"A": "1"},
            "metadata": {"stockade.isolation": "gvisor"},
            "autoPause": True,
            "network": {"allowOut": ["192.0.2.1"]},
            "unknownField": {"ignored": True},
            "volumeMounts": [{"name": "data", "path": "/mnt/data"}],
        }
    )
    spec = body.spec()
    assert (spec.template, spec.isolation, spec.timeout, spec.on_timeout) == (
        "code-interpreter",
        "gvisor",
        60,
        "pause",
    )
    assert spec.envs == {"A": "1"} and spec.network is not None
    assert spec.network.allow_out == ["192.0.2.1"]
    assert [(m.path, m.volume) for m in spec.volumes] == [("/mnt/data", "data")]
    assert wire.NewSandbox.model_validate({"templateID": "base"}).spec().network is None
    resumed = wire.NewSandbox.model_validate(
        {"templateID": "base", "autoPause": True, "autoResume": {"enabled": True}}
    ).spec()
    assert (resumed.on_timeout, resumed.auto_resume) == ("pause", True)
    for refused in ({"mcp": {"x": {}}}, {"network": {"rules": {"a.com": []}}}, {"iam": {"tokens": [1]}}):
        with pytest.raises(ValueError, match="not supported"):
            wire.NewSandbox.model_validate({"templateID": "base", **refused}).spec()


def test_e2b_template_becomes_a_dockerfile() -> None:
    digest = "ab" * 32
    start = BuildStart.model_validate(
        {
            "fromTemplate": "code-interpreter-v1",
            "steps": [
                {"type": "RUN", "args": ["apt-get install -y x", "root"]},
                {"type": "COPY", "args": ["src/*.py", "/app/", "", ""], "filesHash": digest},
                {"type": "ENV", "args": ["A", "it's $HOME"]},
                {"type": "WORKDIR", "args": ["/app"]},
                {"type": "USER", "args": ["root"]},
                {"type": "RUN", "args": ["id"]},
            ],
        }
    )
    dockerfile, files = start.dockerfile()
    assert files == [digest]
    assert dockerfile.splitlines() == [
        "FROM code-interpreter",
        "USER user",
        "USER root",
        'RUN ["/bin/sh", "-c", "apt-get install -y x"]',
        "USER user",
        f'COPY ["{digest}/src/*.py", "/app/"]',
        "ENV A='it'\\''s \\$HOME'",
        'WORKDIR ["/app"]',
        "USER root",
        'RUN ["/bin/sh", "-c", "id"]',
    ]
    from stockade.images.dockerfile import parse

    assert [s.instruction for s in parse(dockerfile)][:3] == ["FROM", "USER", "USER"]
    for bad, words in [
        ({"fromImage": "python:3"}, "cannot be pulled"),
        ({"startCmd": "x"}, "start command"),
        ({"steps": [{"type": "COPY", "args": ["a", "b", "root", ""], "filesHash": digest}]}, "user or mode"),
        ({"steps": [{"type": "RUN", "args": ["x", "bad user!"]}]}, "user name"),
        ({"steps": [{"type": "ENV", "args": ["A"]}]}, "pairs"),
        ({"steps": [{"type": "HEALTHCHECK", "args": []}]}, "Stockade can build"),
    ]:
        with pytest.raises(E2BError, match=words):
            BuildStart.model_validate(bad).dockerfile()


def test_metadata_filter_decodes_each_part() -> None:
    assert wire.metadata_filter("a=1&b%3Dx=c%26d") == {"a": "1", "b=x": "c&d"}
    with pytest.raises(ValueError):
        wire.metadata_filter("novalue")


@given(
    path=st.text(min_size=1, max_size=40),
    user=st.sampled_from([None, "user", "root"]),
    token=st.text(alphabet="0123456789abcdef", min_size=8, max_size=64),
    expires=st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
)
def test_signature_matches_the_sdk(path: str, user: str | None, token: str, expires: int | None) -> None:
    signed = get_signature(path, "read", user, token, expires)
    expiration = str(signed["expiration"]) if signed["expiration"] else ""
    assert gate._signature(path, "read", user or "", token, expiration) == signed["signature"]
    assert gate._signature(path, "write", user or "", token, expiration) != signed["signature"]

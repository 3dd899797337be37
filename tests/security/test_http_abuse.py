"""Garbage and oversized bodies to every route of the server: a 4xx with the JSON error shape,
never a 5xx, and the server keeps serving. (Keys and tenants are tested with the server.)"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import httpx
import pytest

from stockade import Sandbox

pytestmark = [pytest.mark.root]
OVERSIZED = 24 << 20
BODIES: dict[str, bytes] = {
    "not json": b"\x00\xff garbage {{{",
    "json array": b"[1, 2, 3]",
    "json scalar": b"42",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "wrong types": json.dumps(
        {
            "timeout": "soon",
            "path": 7,
            "cmd": ["x"],
            "pid": "one",
            "signal": {"a": 1},
            "user": None,
            "cols": -1,
        }
    ).encode(),
    "oversized": json.dumps(
        {"cmd": "x" * OVERSIZED, "path": "y" * 8192, "envs": {str(i): "v" for i in range(5000)}}
    ).encode(),
    "random": os.urandom(64 << 10),
}
#: Routes whose body is raw data by design (an upload, stdin): garbage is valid content there.
RAW_BODY_ROUTES = {
    ("PUT", "/sandboxes/{sandbox_id}/files"),
    ("POST", "/sandboxes/{sandbox_id}/processes/stdin"),
}


def _routes(client: httpx.Client) -> list[tuple[str, str, bool]]:
    """(method, path template, whether it takes a JSON body) of every route the server serves."""
    spec = client.get("/openapi.json").json()
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "delete", "patch"):
                content = op.get("requestBody", {}).get("content", {})
                found.append((method.upper(), path, "application/json" in content))
    return found


def _fill(path: str, sandbox_id: str) -> str:
    out = path.replace("{sandbox_id}", sandbox_id)
    while "{" in out:
        start = out.index("{")
        out = out[:start] + "x" + out[out.index("}") + 1 :]
    return out


def test_bad_bodies_get_4xx_and_the_server_survives(
    daemon: Any, make_sandbox: Callable[..., Sandbox]
) -> None:
    sb = make_sandbox()
    failures = []
    with daemon.client() as client:
        routes = _routes(client)
        assert len(routes) >= 10, routes
        for body, content in BODIES.items():
            # Every body against the live sandbox; unknown and hostile ids with one of them.
            ids = (sb.id, "sb-missing", "..%2F..%2Fetc") if body == "not json" else (sb.id,)
            for method, template, json_body in routes:
                if method == "DELETE" and template == "/sandboxes/{sandbox_id}":
                    continue  # killing our own sandbox is allowed with any body
                for sandbox_id in ids:
                    path = _fill(template, sandbox_id)
                    with client.stream(
                        method,
                        path,
                        content=content,
                        params={"path": "/tmp/abuse", "pid": 1},
                        headers={"content-type": "application/json"},
                    ) as response:
                        if not response.headers.get("content-type", "").startswith(
                            "text/event-stream"
                        ):  # an event stream stays open: no end
                            response.read()
                    status = response.status_code
                    # A route without a JSON body ignores the body; one with must refuse garbage.
                    must_refuse = json_body and (method, template) not in RAW_BODY_ROUTES
                    if status >= 500 or (status < 400 and must_refuse):
                        failures.append(f"{body}: {method} {path}: {status} {response.text[:200]}")
                    elif status >= 400 and "json" in response.headers.get("content-type", ""):
                        assert set(response.json()) >= {"code", "message"}, response.text[:200]
        assert client.get("/health").status_code == 200
    assert sb.commands.run("true").exit_code == 0
    assert not failures, "\n".join(failures)

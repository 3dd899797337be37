"""Schemathesis generates requests from the OpenAPI document the server serves; none may get a
5xx. Sandbox routes are aimed half the time at a real sandbox of the caller's tenant."""

from __future__ import annotations

import random
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from server_harness import Server, sqlite_server  # noqa: F401

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def target(sqlite_server: Server) -> Iterator[dict[str, Any]]:
    with sqlite_server.admin() as admin:
        admin.post("/tenants", json={"name": "fuzz", "max_sandboxes": 3, "max_lifetime": 120})
    key = sqlite_server.new_key("fuzz")
    with sqlite_server.client(key) as c:
        sb = c.post("/sandboxes", json={"timeout": 120}).json()
    yield {"server": sqlite_server, "key": key, "sandbox": sb["id"]}


@pytest.fixture(scope="module")
def api_schema(target: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(f"{target['server'].url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, target: dict[str, Any]) -> None:
    server: Server = target["server"]
    params = case.path_parameters or {}
    if "sandbox_id" in params and case.method != "DELETE" and random.random() < 0.5:
        params["sandbox_id"] = target["sandbox"]
    key = server.admin_key if case.path.startswith("/tenants") else target["key"]
    auth = {"Authorization": f"Bearer {key}"}
    if _streams_events(case):
        _check_event_stream(case, server, auth)
        return
    response = case.call(base_url=server.url, headers=auth, timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"{case.as_curl_command()}\n{server.log_tail()[-1500:]}"
    )


def _streams_events(case: Any) -> bool:
    """Whether the route answers an event stream, which stays open (``GET /events``)."""
    ok = case.operation.definition.raw.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


def _check_event_stream(case: Any, server: Server, auth: dict[str, str]) -> None:
    """Open the stream, judge its status and first bytes, close it (it never ends by itself)."""
    kwargs = case.as_transport_kwargs(base_url=server.url, headers=auth)
    try:
        with httpx.stream(
            kwargs["method"],
            kwargs["url"],
            headers=kwargs["headers"],
            params=kwargs.get("params"),
            timeout=30,
        ) as response:
            status = response.status_code
            first = next(response.iter_bytes(), b"") if status < 400 else response.read()
    except httpx.LocalProtocolError:
        return  # a header httpx will not send (a generated one with a line break): not sent
    assert status < 500, f"{case.method} {case.formatted_path} -> {status}: {first[:500]!r}"
    if status == 200:
        assert first.startswith(b": stockade events"), first[:200]

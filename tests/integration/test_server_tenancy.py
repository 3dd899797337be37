"""Tenants are invisible to each other, quotas hold, and the SDK works unchanged against the
server (remote mode); on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
from typing import Any, Iterator

import httpx
import pytest
from server_harness import Server, postgres, server  # noqa: F401

from stockade import Sandbox
from stockade.sdk.exceptions import QuotaExceededError, SandboxNotFound

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def victim(server: Server) -> Iterator[dict[str, Any]]:
    """A sandbox of tenant 'victim' with a file and a running process, plus an attacker key."""
    key = server.new_key("victim")
    with server.client(key) as c:
        sb = c.post("/sandboxes", json={"timeout": 600, "metadata": {"owner": "victim"}}).json()
        base = f"/sandboxes/{sb['id']}"
        assert (
            c.put(
                f"{base}/files", params={"path": "/home/user/secret.txt"}, content=b"victim data"
            ).status_code
            == 200
        )
        with c.stream(
            "POST", f"{base}/processes", json={"cmd": "sleep 600", "tag": "keeper", "timeout": 600}
        ) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # started
    yield {"sandbox": sb, "key": key, "attacker": server.new_key("attacker")}
    with server.client(key) as c:
        c.delete(f"/sandboxes/{sb['id']}")


def sandbox_routes(server: Server) -> list[tuple[str, str, dict[str, Any]]]:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    routes = []
    for path, ops in spec["paths"].items():
        if path.startswith("/sandboxes/{sandbox_id}"):
            routes += [(method.upper(), path, op) for method, op in ops.items()]
    return routes


def call(client: httpx.Client, method: str, path: str, op: dict[str, Any], sandbox_id: str) -> httpx.Response:
    url = re.sub(r"\{(\w+)\}", lambda m: sandbox_id if m.group(1) == "sandbox_id" else "1", path)
    params = {
        p["name"]: "/home/user/secret.txt" if p["name"] in ("path", "src", "dst") else "1"
        for p in op.get("parameters", [])
        if p["in"] == "query" and p.get("required")
    }
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return client.request(
            method,
            url,
            params=params,
            json={
                "path": "/home/user/secret.txt",
                "pid": 1,
                "tag": "keeper",
                "signal": "KILL",
                "cmd": "rm -rf /home/user",
                "src": "/home/user/secret.txt",
                "dst": "/tmp/x",
                "timeout": 5,
                "cols": 10,
                "rows": 10,
            },
        )
    return client.request(method, url, params=params, content=b"overwritten")


def test_every_sandbox_route_answers_404_to_another_tenant(server: Server, victim: dict[str, Any]) -> None:
    sb = victim["sandbox"]
    routes = sandbox_routes(server)
    assert len(routes) >= 12, routes
    with server.client(victim["attacker"]) as attacker:
        for method, path, op in routes:
            theirs = call(attacker, method, path, op, sb["id"])
            missing = call(attacker, method, path, op, "sb" + "0" * 18)
            assert theirs.status_code == 404, (method, path, theirs.text)
            body, other = theirs.json(), missing.json()
            assert body["code"] == "sandbox_not_found" == other["code"], (method, path)
            assert body["message"] == other["message"].replace("sb" + "0" * 18, sb["id"])
        assert attacker.get("/sandboxes").json()["items"] == []
    with server.client(victim["key"]) as owner:
        base = f"/sandboxes/{sb['id']}"
        now = owner.get(base).json()
        assert now["state"] == "running" and now["expires_at"] == sb["expires_at"]
        assert now["metadata"] == {"owner": "victim"}
        assert owner.get(f"{base}/files", params={"path": "/home/user/secret.txt"}).content == b"victim data"
        procs = owner.get(f"{base}/processes").json()
        assert [p["tag"] for p in procs if p["status"] == "running"] == ["keeper"]
        assert [s["id"] for s in owner.get("/sandboxes").json()["items"]] == [sb["id"]]
    with server.admin() as admin:  # the admin sees every tenant's sandboxes
        assert sb["id"] in [s["id"] for s in admin.get("/sandboxes").json()["items"]]


def test_quotas_answer_429_with_a_clear_message(server: Server) -> None:
    with server.admin() as admin:
        r = admin.post(
            "/tenants",
            json={
                "name": "quota",
                "max_sandboxes": 1,
                "max_vcpu": 1.5,
                "max_memory_mb": 1024,
                "max_lifetime": 600,
            },
        )
        assert r.status_code == 201, r.text
    key = server.new_key("quota")
    with server.client(key) as c:
        first = c.post("/sandboxes", json={"cpu": 1, "memory_mb": 512, "timeout": 300})
        assert first.status_code == 201, first.text
        sb = first.json()["id"]
        r = c.post("/sandboxes", json={"cpu": 0.1, "memory_mb": 64})
        assert r.status_code == 429 and r.json()["code"] == "quota_exceeded"
        assert "already runs 1 sandboxes" in r.json()["message"]
        with server.admin() as admin:
            assert admin.patch("/tenants/quota", json={"max_sandboxes": 5}).status_code == 200
        r = c.post("/sandboxes", json={"cpu": 1, "memory_mb": 64})
        assert r.status_code == 429 and "vCPU" in r.json()["message"]
        r = c.post("/sandboxes", json={"cpu": 0.25, "memory_mb": 600})
        assert r.status_code == 429 and "MiB" in r.json()["message"]
        r = c.post("/sandboxes", json={"cpu": 0.25, "memory_mb": 64, "timeout": 601})
        assert r.status_code == 429 and "at most 600 s" in r.json()["message"]
        r = c.post(f"/sandboxes/{sb}/timeout", json={"timeout": 700})
        assert r.status_code == 429 and "at most 600 s" in r.json()["message"]
        usage = c.get("/tenants/quota").json()
        assert (usage["sandboxes"], usage["vcpu"], usage["memory_mb"]) == (1, 1.0, 512)
        assert c.delete(f"/sandboxes/{sb}").status_code == 204
        again = c.post("/sandboxes", json={"cpu": 1, "memory_mb": 512, "timeout": 300})
        assert again.status_code == 201
        assert c.delete(f"/sandboxes/{again.json()['id']}").status_code == 204
        actions = [e["action"] for e in c.get("/audit").json()["items"]]
        assert actions.count("sandbox.create") == 2 and actions.count("sandbox.kill") == 2


def test_sdk_in_remote_mode(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    key = server.new_key(
        "sdkuser",
    )
    with server.admin() as admin:
        admin.patch("/tenants/sdkuser", json={"max_sandboxes": 1})
    monkeypatch.setenv("STOCKADE_API_URL", server.url)
    monkeypatch.setenv("STOCKADE_API_KEY", key)
    with Sandbox.create(timeout=60) as sb:
        assert sb.commands.run("echo remote").stdout == "remote\n"
        sb.files.write("/home/user/a.txt", "A")
        assert sb.files.read("/home/user/a.txt") == "A"
        with pytest.raises(QuotaExceededError):
            Sandbox.create(timeout=60)
        assert [s.id for s in Sandbox.list()] == [sb.id]
        monkeypatch.setenv("STOCKADE_API_KEY", server.new_key("stranger"))
        with pytest.raises(SandboxNotFound):
            Sandbox.connect(sb.id)
        monkeypatch.setenv("STOCKADE_API_KEY", key)
    with server.client() as c:
        metrics = c.get("/metrics").text
    assert 'stockade_sandbox_creates_total{outcome="ok",tier="container"}' in metrics
    assert "stockade_commands_total" in metrics and "stockade_sandbox_create_seconds" in metrics

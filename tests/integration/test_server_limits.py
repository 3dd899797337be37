"""Bad input gets a clear 4xx, never a 5xx: malformed JSON, wrong types, huge bodies, and paths
that try to leave the sandbox ('..', host paths, symlinks to host paths). A client that stops
reading a 1 GB stream does not make the server buffer it."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Iterator

import httpx
import pytest
from server_harness import Server, sqlite_server  # noqa: F401

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def tenant(sqlite_server: Server) -> Iterator[dict[str, Any]]:
    key = sqlite_server.new_key("limits")
    with sqlite_server.client(key) as c:
        sb = c.post("/sandboxes", json={"timeout": 600}).json()
    yield {"key": key, "id": sb["id"]}
    with sqlite_server.client(key) as c:
        c.delete(f"/sandboxes/{sb['id']}")


def test_malformed_json_and_wrong_types_are_400(sqlite_server: Server, tenant: dict[str, Any]) -> None:
    with sqlite_server.client(tenant["key"]) as c:
        for content in (b"{", b"[1,2", b"\xff\xfe", b"null", b'"text"'):
            r = c.post("/sandboxes", content=content, headers={"content-type": "application/json"})
            assert r.status_code == 400, (content, r.text)
            assert r.json()["code"] == "invalid_request" and r.json()["request_id"]
        for body in (
            {"cpu": "lots"},
            {"timeout": -1},
            {"isolation": "vm9000"},
            {"envs": {"A": 1}},
            {"unknown": True},
            {"memory_mb": 10**30},
        ):
            r = c.post("/sandboxes", json=body)
            assert r.status_code == 400, (body, r.text)
        r = c.post("/sandboxes", json={"cpu": "lots"})
        assert "cpu" in r.json()["message"]
        r = c.post(f"/sandboxes/{tenant['id']}/processes", json={"cmd": ["not", "a", "string"]})
        assert r.status_code == 400
        r = c.get("/sandboxes", params={"limit": "many"})
        assert r.status_code == 400 and "limit" in r.json()["message"]


def test_huge_bodies_are_413(sqlite_server: Server, tenant: dict[str, Any]) -> None:
    big = b'{"metadata": {"a": "' + b"x" * (9 << 20) + b'"}}'
    with sqlite_server.client(tenant["key"]) as c:
        r = c.post("/sandboxes", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield big[: 1 << 20]
            for i in range(1 << 20, len(big), 1 << 20):
                yield big[i : i + (1 << 20)]

        r = c.post("/sandboxes", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = c.post(f"/sandboxes/{tenant['id']}/processes/stdin", params={"pid": 1}, content=b"x" * (9 << 20))
        assert r.status_code == 413
        # File uploads stream and are bounded by the sandbox's disk, not by the body limit.
        r = c.put(
            f"/sandboxes/{tenant['id']}/files",
            params={"path": "/home/user/big.bin"},
            content=b"y" * (12 << 20),
        )
        assert r.status_code == 200 and r.json()["size"] == 12 << 20


def test_paths_cannot_leave_the_sandbox(sqlite_server: Server, tenant: dict[str, Any]) -> None:
    secret = b"host secret " + os.urandom(8).hex().encode()
    with tempfile.NamedTemporaryFile(dir="/var/tmp", prefix="host-secret-") as host_file:
        host_file.write(secret)
        host_file.flush()
        base = f"/sandboxes/{tenant['id']}/files"
        with sqlite_server.client(tenant["key"]) as c:
            for path in (
                "/home/user/../../etc/passwd",
                "../../../etc/shadow",
                "a/../../b",
                "/home/user/x\x00y",
            ):
                for r in (
                    c.get(base, params={"path": path}),
                    c.put(base, params={"path": path}, content=b"x"),
                    c.get(f"{base}/stat", params={"path": path}),
                    c.delete(base, params={"path": path}),
                    c.post(f"{base}/mkdir", json={"path": path}),
                    c.post(f"{base}/rename", json={"src": "/home/user/big.bin", "dst": path}),
                ):
                    assert r.status_code == 400, (path, r.request.method, r.text)
                    assert "'..'" in r.json()["message"] or "NUL" in r.json()["message"]
            # A host path, directly or through a symlink made inside: only the sandbox's own
            # filesystem is ever reached, where that path does not exist.
            for path in (
                host_file.name,
                "/var/lib/stockade/private/admin.key",
                str(sqlite_server.data_dir / "private" / "stockade.db"),
            ):
                r = c.get(base, params={"path": path})
                assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
            link = c.post(
                f"/sandboxes/{tenant['id']}/processes",
                json={"cmd": f"ln -s {host_file.name} /home/user/link && ln -s / /home/user/root"},
            )
            assert '"exit_code":0' in link.text
            r = c.get(base, params={"path": "/home/user/link"})
            assert r.status_code == 404 and secret not in r.content
            r = c.get(base, params={"path": "/home/user/root" + host_file.name})
            assert r.status_code == 404 and secret not in r.content
            r = c.put(base, params={"path": "/home/user/link"}, content=b"overwrite")
            assert r.status_code in (200, 400, 403, 404)
        with open(host_file.name, "rb") as check:
            assert check.read() == secret


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_stalled_reader_of_a_1gb_stream_does_not_grow_server_memory(
    sqlite_server: Server, tenant: dict[str, Any]
) -> None:
    url = f"{sqlite_server.url}/sandboxes/{tenant['id']}/processes"
    body = {"cmd": "head -c 1073741824 /dev/zero", "max_output": 2 << 30, "timeout": 120}
    before = rss_mb(sqlite_server.pid)
    with httpx.Client(headers={"Authorization": f"Bearer {tenant['key']}"}, timeout=httpx.Timeout(60)) as c:
        with c.stream("POST", url, json=body) as r:
            assert r.status_code == 200
            got = 0
            for chunk in r.iter_raw():
                got += len(chunk)
                if got > 4 << 20:
                    break
            peak = before
            for _ in range(16):  # stop reading for 8 s while the process could write 1 GB
                time.sleep(0.5)
                peak = max(peak, rss_mb(sqlite_server.pid))
    assert peak - before < 100, f"server RSS grew from {before:.0f} to {peak:.0f} MiB"
    with sqlite_server.client(tenant["key"]) as c:  # the server is fine afterwards
        r = c.post(f"/sandboxes/{tenant['id']}/processes", json={"cmd": "echo ok"})
        assert '"end"' in r.text


def test_disk_quota_counts_stopped_and_archived_sandboxes(sqlite_server: Server) -> None:
    """Stopped workspaces hold their disk; archiving frees all but the archive; restoring an
    archive is checked against the quota like a create."""
    with sqlite_server.admin() as admin:
        r = admin.post("/tenants", json={"name": "diskquota", "max_disk_mb": 150})
        assert r.status_code == 201 and r.json()["max_disk_mb"] == 150, r.text
    ws = {"disk_mb": 64, "persistence": "workspace", "timeout": 300}
    with sqlite_server.client(sqlite_server.new_key("diskquota")) as c:
        a, b = (c.post("/sandboxes", json=ws).json()["id"] for _ in range(2))
        assert c.post(f"/sandboxes/{a}/stop").json()["state"] == "stopped"
        assert c.post(f"/sandboxes/{b}/stop").status_code == 200
        r = c.post("/sandboxes", json=ws)
        assert r.status_code == 429 and r.json()["code"] == "quota_exceeded"
        assert "holds 128 of 150 MiB of disk" in r.json()["message"] and "stopped" in r.json()["message"], (
            r.text
        )
        assert c.get("/tenants/diskquota").json()["disk_mb"] == 128
        assert c.delete(f"/sandboxes/{b}").status_code == 204
        c_id = c.post("/sandboxes", json=ws).json()["id"]  # room again: 64 + 64
        assert c.post(f"/sandboxes/{a}/archive").json()["state"] == "archived"
        held = c.get("/tenants/diskquota").json()["disk_mb"]
        assert 64 < held < 64 + 8, held  # c's disk and a's (small) archive
        d_id = c.post("/sandboxes", json=ws).json()["id"]
        r = c.post(f"/sandboxes/{a}/connect")
        assert r.status_code == 429 and "restoring archived sandbox" in r.json()["message"]
        assert c.get(f"/sandboxes/{a}").json()["state"] == "archived"
        assert c.delete(f"/sandboxes/{d_id}").status_code == 204
        assert c.post(f"/sandboxes/{a}/start").json()["state"] == "running"
        for sandbox_id in (a, c_id):
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204

"""API keys against a real server, on SQLite and on PostgreSQL: shown once, stored hashed,
listed by prefix, revoked and expired keys refused, tenant keys confined to their tenant."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest
from server_harness import STOCKADE, Server, postgres, server  # noqa: F401

from stockade.server.store import Store, database_url

pytestmark = pytest.mark.root


def key_id(key: str) -> str:
    return "_".join(key.split("_")[:2])


def store_of(srv: Server) -> Store:
    return Store(database_url(srv.data_dir, srv.database_url))


def test_requests_without_a_valid_key_are_refused(server: Server) -> None:
    with server.client() as c:
        r = c.get("/sandboxes")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert "Authorization: Bearer" in r.json()["message"]
        assert c.get("/health").status_code == 200  # public
    for bad in ("nope", server.admin_key + "x", "sk_000000000000_" + "a" * 43):  # type: ignore[operator]
        with server.client(bad) as c:
            assert c.get("/sandboxes").status_code == 401
            assert c.post("/sandboxes", json={}).status_code == 401


def test_key_is_shown_once_stored_hashed_and_listed_by_prefix(server: Server) -> None:
    with server.admin() as admin:
        created = admin.post("/keys", json={"tenant": "hashcheck", "name": "ci"}).json()
        key = created["key"]
        assert key.startswith(created["id"] + "_") and len(key) > 50
        listed = admin.get("/keys", params={"tenant": "hashcheck"}).json()["items"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert key not in str(listed) and "sha256" not in str(listed)
    store = store_of(server)
    try:
        row = next(k for k in store.keys("hashcheck"))
        assert row.sha256 == hashlib.sha256(key.encode()).hexdigest()
        with store.engine.connect() as conn:
            dump = str([tuple(r) for r in conn.exec_driver_sql("SELECT * FROM api_keys")])
        assert key not in dump and key.split("_", 2)[2] not in dump
    finally:
        store.close()
    with server.client(key) as c:
        assert c.get("/whoami").json() == {"tenant": "hashcheck", "actor": created["id"], "admin": False}


def test_revoked_key_is_refused_at_once(server: Server) -> None:
    key = server.new_key("revoker")
    with server.client(key) as c:
        assert c.get("/sandboxes").status_code == 200  # now cached as valid
    with server.admin() as admin:
        r = admin.delete(f"/keys/{key_id(key)}")
        assert r.status_code == 200 and r.json()["state"] == "revoked"
        assert admin.get("/keys", params={"tenant": "revoker"}).json()["items"][0]["state"] == "revoked"
    with server.client(key) as c:
        r = c.get("/sandboxes")
        assert r.status_code == 401 and "revoked" in r.json()["message"]


def test_expired_key_is_refused(server: Server) -> None:
    key = server.new_key("expirer", expires_in=1.5)
    with server.client(key) as c:
        assert c.get("/sandboxes").status_code == 200
        time.sleep(2)
        assert c.get("/sandboxes").status_code == 401
    with server.admin() as admin:
        assert admin.get("/keys", params={"tenant": "expirer"}).json()["items"][0]["state"] == "expired"


def test_tenant_keys_cannot_manage_tenants_or_other_tenants_keys(server: Server) -> None:
    mine, theirs = server.new_key("alpha"), server.new_key("beta")
    theirs_id = key_id(theirs)
    with server.client(mine) as c:
        assert c.post("/tenants", json={"name": "evil"}).status_code == 403
        assert c.get("/tenants").status_code == 403
        assert c.patch("/tenants/alpha", json={"max_sandboxes": 1000}).status_code == 403
        assert c.get("/tenants/beta").status_code == 404
        assert c.get("/tenants/alpha").status_code == 200
        assert {k["tenant"] for k in c.get("/keys", params={"tenant": "beta"}).json()["items"]} == {"alpha"}
        assert c.delete(f"/keys/{theirs_id}").status_code == 404
        assert c.post("/keys", json={"tenant": "beta"}).status_code == 404
        assert {e["tenant"] for e in c.get("/audit", params={"tenant": "beta"}).json()["items"]} <= {"alpha"}
        own = c.post("/keys", json={"name": "second"})
        assert own.status_code == 201 and own.json()["tenant"] == "alpha"
    with server.client(theirs) as c:
        assert c.get("/whoami").status_code == 200  # still valid


def test_key_events_are_audited(server: Server) -> None:
    key = server.new_key("audited")
    with server.admin() as admin:
        admin.delete(f"/keys/{key_id(key)}")
        events = admin.get("/audit", params={"tenant": "audited"}).json()["items"]
    assert [e["action"] for e in events] == ["tenant.create", "key.create", "key.revoke"]
    assert all(e["actor"] == "admin" and e["request_id"] for e in events)


def test_cli_keys_create_prints_the_key_alone_on_the_last_line(server: Server) -> None:
    env = {**os.environ, "STOCKADE_API_URL": server.url, "STOCKADE_API_KEY": server.admin_key}
    out = subprocess.run(
        [STOCKADE, "keys", "create", "--tenant", "clitenant"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = out.stdout.strip().splitlines()[-1]
    assert out.stdout.strip() == key
    with server.client(key) as c:
        assert c.get("/whoami").json()["tenant"] == "clitenant"
    listed = subprocess.run(
        [STOCKADE, "keys", "ls", "--tenant", "clitenant"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert key_id(key) in listed and key not in listed
    subprocess.run([STOCKADE, "keys", "revoke", key_id(key)], env=env, check=True, capture_output=True)
    with server.client(key) as c:
        assert c.get("/whoami").status_code == 401

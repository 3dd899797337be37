"""A PostgreSQL restart under a running server (as a cluster's replicas see one): while the
database is down, calls that need it answer 503 ``store_unavailable`` (never a 500, never a
sandbox left without its row) and the server stays up; once it is back, everything works again
without restarting the server."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from server_harness import Postgres, Server, finish, needs_root, new_data_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Postgres, Server]]:
    needs_root()
    pg = Postgres().start()  # its own: this module stops and starts it
    try:
        url = pg.create_database("stockade_" + os.urandom(4).hex())
        srv = Server(new_data_dir(), database_url=url).start()
        try:
            yield pg, srv
        finally:
            finish(srv)
    finally:
        pg.stop()


def test_a_database_restart_is_survived(world: tuple[Postgres, Server]) -> None:
    pg, server = world
    key, unused = server.new_key("acme"), server.new_key("acme")
    with server.client(key) as c:
        r = c.post("/sandboxes", json={"memory_mb": 128})
        assert r.status_code == 201, r.text
        kept = r.json()["id"]

        pg.pause()
        try:
            r = c.post("/sandboxes", json={"memory_mb": 128})
            assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
            assert "retry" in r.json()["message"]
            with server.admin() as admin:
                r = admin.post("/keys", json={"tenant": "newcomer"})
                assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
            with server.client(unused) as fresh:  # not in the key cache: the check needs the store
                r = fresh.get("/sandboxes")
                assert r.status_code == 503 and r.json()["code"] == "store_unavailable", r.text
            assert c.get("/health").status_code == 200
            assert c.post(f"/sandboxes/{kept}/processes", json={"cmd": "true"}).status_code == 200
        finally:
            pg.resume()

        # Back: the pool reconnects on its own; no sandbox was made by the refused create.
        r = c.get("/sandboxes")
        assert r.status_code == 200, r.text
        assert [s["id"] for s in r.json()["items"]] == [kept]
        r = c.post("/sandboxes", json={"memory_mb": 128})
        assert r.status_code == 201, r.text
        assert c.delete(f"/sandboxes/{r.json()['id']}").status_code == 204
        assert server.new_key("newcomer")
        assert c.delete(f"/sandboxes/{kept}").status_code == 204

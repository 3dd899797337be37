"""The store and the engine agree across restarts: SIGKILL mid-create leaves no orphan sandbox
and no dangling row; SIGTERM is graceful and running sandboxes are re-attached; sandboxes that
end by their timeout lose their row; the admin key is generated once, owner-only."""

from __future__ import annotations

import signal
import stat
import threading
import time
from typing import Iterator

import httpx
import pytest
from server_harness import ADMIN_KEY, Server, finish, needs_root, new_data_dir

from stockade.engine.hostcheck import find_leaks
from stockade.server.store import OwnedSandbox, Store, database_url

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def srv() -> Iterator[Server]:
    needs_root()
    server = Server(new_data_dir(), STOCKADE_REAP_INTERVAL="1").start()
    yield server
    finish(server)


def rows(server: Server) -> list[str]:
    store = Store(database_url(server.data_dir))
    try:
        return sorted(r.id for r in store.sandboxes())
    finally:
        store.close()


def sandbox_ids(server: Server) -> list[str]:
    with server.admin() as c:
        return sorted(s["id"] for s in c.get("/sandboxes").json()["items"])


@pytest.mark.parametrize("delay", [0.02, 0.15, 0.4])
def test_sigkill_mid_create_then_restart_leaves_no_orphan(srv: Server, delay: float) -> None:
    key = srv.new_key("crash")
    outcome: list[object] = []

    def create() -> None:
        try:
            with srv.client(key) as c:
                outcome.append(c.post("/sandboxes", json={"isolation": "gvisor"}).status_code)
        except httpx.TransportError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=create)
    thread.start()
    time.sleep(delay)
    srv.stop(signal.SIGKILL)
    thread.join(30)
    srv.start()
    assert sandbox_ids(srv) == rows(srv)  # every row has its sandbox and vice versa
    if outcome and outcome[0] == 201:
        assert len(rows(srv)) == 1  # the create finished before the kill: it survives
        srv.kill_all_sandboxes()
    assert sandbox_ids(srv) == [] and rows(srv) == []
    assert find_leaks(srv.data_dir) == []


def test_sigterm_is_graceful_and_sandboxes_are_reattached(srv: Server) -> None:
    key = srv.new_key("steady")
    with srv.client(key) as c:
        sb = c.post("/sandboxes", json={"timeout": 120}).json()
    srv.stop(signal.SIGTERM)
    # uvicorn re-raises the signal once shut down, so the exit status is "killed by SIGTERM"
    assert srv.proc is not None and srv.proc.returncode in (0, -signal.SIGTERM)
    assert '"Application shutdown complete."' in srv.log_tail()
    srv.start()
    with srv.client(key) as c:
        r = c.post(f"/sandboxes/{sb['id']}/processes", json={"cmd": "echo back"})
        assert r.status_code == 200 and '"end"' in r.text
        assert [s["id"] for s in c.get("/sandboxes").json()["items"]] == [sb["id"]]
    with srv.client() as c:
        assert 'stockade_sandboxes{state="running",tier="container"} 1.0' in c.get("/metrics").text
    assert rows(srv) == [sb["id"]]


def test_rows_without_sandbox_are_dropped_at_start(srv: Server) -> None:
    srv.stop()
    store = Store(database_url(srv.data_dir))
    store.create_tenant("ghost", exist_ok=True)
    store.add_sandbox(
        OwnedSandbox(
            id="sbghost000000000000",
            tenant="ghost",
            isolation="container",
            cpu=1,
            memory_mb=512,
            created_at=time.time(),
        )
    )
    store.close()
    srv.start()
    assert rows(srv) == []
    with srv.admin() as c:
        events = c.get("/audit", params={"tenant": "ghost"}).json()["items"]
    assert [e["action"] for e in events] == ["sandbox.reaped"]


def test_expired_sandboxes_lose_their_row(srv: Server) -> None:
    key = srv.new_key("shortlived")
    with srv.client(key) as c:
        sb = c.post("/sandboxes", json={"timeout": 1}).json()
        assert rows(srv) == [sb["id"]]
        deadline = time.monotonic() + 20
        while rows(srv) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rows(srv) == []
        assert c.get("/tenants/shortlived").json()["sandboxes"] == 0
        assert [e["action"] for e in c.get("/audit").json()["items"]][-1] == "sandbox.expired"


def test_admin_key_is_generated_once_owner_only() -> None:
    needs_root()
    server = Server(new_data_dir(), admin_key=None).start()
    try:
        path = server.data_dir / "private" / "admin.key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = path.read_text().strip()
        assert str(path) in server.log_tail()
        server.admin_key = key
        with server.admin() as c:
            assert c.get("/whoami").json()["admin"] is True
        with server.client(ADMIN_KEY) as c:
            assert c.get("/whoami").status_code == 401
        server.stop()
        server.start()
        assert path.read_text().strip() == key
    finally:
        finish(server)

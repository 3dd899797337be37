"""The store on SQLite: migrations, tenants, keys, ownership, audit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stockade.engine import Conflict, NotFound
from stockade.server.store import ApiKey, OwnedSandbox, Store, database_url


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(database_url(tmp_path))
    s.migrate()
    s.migrate()  # idempotent
    yield s
    s.close()


def test_default_url_is_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCKADE_DATABASE_URL", raising=False)
    assert database_url(tmp_path) == f"sqlite:///{tmp_path}/private/stockade.db"
    monkeypatch.setenv("STOCKADE_DATABASE_URL", "postgresql://u@h/db")
    assert database_url(tmp_path) == "postgresql+psycopg://u@h/db"


def test_tenants_keys_sandboxes_audit(store: Store) -> None:
    tenant, created = store.create_tenant("acme", {"max_sandboxes": 2})
    assert created and tenant.max_sandboxes == 2
    assert store.create_tenant("acme", exist_ok=True)[1] is False
    with pytest.raises(Conflict):
        store.create_tenant("acme")
    assert store.update_tenant("acme", {"max_vcpu": 4.0}).max_vcpu == 4.0
    with pytest.raises(NotFound):
        store.update_tenant("nobody", {})
    store.add_key(ApiKey(id="sk_1", tenant="acme", sha256="a" * 64, created_at=time.time()))
    assert store.key_by_hash("a" * 64).id == "sk_1"  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.revoke_key("sk_1", tenant="other")
    assert store.revoke_key("sk_1").revoked_at is not None
    store.add_sandbox(
        OwnedSandbox(
            id="sb1", tenant="acme", isolation="container", cpu=1, memory_mb=512, created_at=time.time()
        )
    )
    assert [r.id for r in store.sandboxes()] == ["sb1"]
    store.remove_sandboxes(["sb1"])
    assert store.sandboxes() == []
    store.audit(tenant="acme", actor="admin", action="key.create", target="sk_1", n=1)
    store.audit(tenant="other", actor="admin", action="key.create")
    events = store.audit_events("acme")
    assert [(e.action, e.detail) for e in events] == [("key.create", {"n": 1})]
    assert len(store.audit_events(None)) == 2
    assert store.audit_events(None, after=events[0].id)[0].tenant == "other"


def test_idempotency_keys_claim_settle_expire(store: Store) -> None:
    store.create_tenant("acme")
    store.create_tenant("other")
    assert store.claim_key("acme", "k", ttl=60) == (True, None)
    assert store.claim_key("acme", "k", ttl=60) == (False, None)  # the first create runs
    assert store.claim_key("other", "k", ttl=60) == (True, None)  # keys are per tenant
    store.settle_key("acme", "k", "sb1")
    assert store.claim_key("acme", "k", ttl=60) == (False, "sb1")
    assert store.claim_key("acme", "k", ttl=0) == (True, None)  # too old: taken over
    store.settle_key("acme", "k", None)  # that create failed: released
    assert store.claim_key("acme", "k", ttl=60) == (True, None)

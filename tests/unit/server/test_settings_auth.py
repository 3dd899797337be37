"""Settings precedence, key format and hashing, the admin key file, the key cache."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stockade.server.auth import KeyCache, Principal, hash_key, load_admin_key, new_key
from stockade.server.settings import load_settings


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "s.toml"
    conf.write_text(
        'host = "10.0.0.1"\nport = 9000\ndatabase_url = "sqlite:///f.db"\n[quotas]\nmax_sandboxes = 3\n'
    )
    monkeypatch.delenv("STOCKADE_HOST", raising=False)
    monkeypatch.setenv("STOCKADE_PORT", "9100")
    monkeypatch.setenv("STOCKADE_DATABASE_URL", "sqlite:///env.db")
    s = load_settings(conf, port=None, database_url="sqlite:///flag.db")
    assert (s.host, s.port, s.database_url, s.quotas.max_sandboxes) == (
        "10.0.0.1",
        9100,
        "sqlite:///flag.db",
        3,
    )
    assert load_settings(conf, port=9200).port == 9200


def test_unknown_or_bad_settings_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "s.toml"
    conf.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="unknown settings.*prot"):
        load_settings(conf)
    monkeypatch.setenv("STOCKADE_PORT", "eighty")
    with pytest.raises(ValueError, match="port"):
        load_settings(None)


def test_keys_are_random_and_only_their_hash_identifies_them() -> None:
    (id1, k1), (id2, k2) = new_key(), new_key()
    assert k1.startswith(id1 + "_") and id1 != id2 and k1 != k2
    assert len(k1) - len(id1) - 1 >= 43  # 256 bits of secret
    assert hash_key(k1) != hash_key(k2) and len(hash_key(k1)) == 64


def test_admin_key_generated_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private" / "admin.key"
    key, generated = load_admin_key(None, path)
    assert generated and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_admin_key(None, path) == (key, False)
    assert load_admin_key("from-the-environment-1234", path) == ("from-the-environment-1234", False)
    with pytest.raises(ValueError, match="16"):
        load_admin_key("short", path)


def test_key_cache_honours_expiry_ttl_and_forget() -> None:
    cache = KeyCache(ttl=10)
    who = Principal(tenant="t", actor="sk_1")
    cache.put("h1", who, expires_at=None)
    cache.put("h2", who, expires_at=100.0)
    import time

    now = time.time()
    assert cache.get("h1", now) == who and cache.get("h1", now + 11) is None
    assert cache.get("h2", now) is None  # expired long ago
    cache.forget("sk_1")
    assert cache.get("h1", now) is None

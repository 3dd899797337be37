"""The secrets store and the interception pieces that need no root and no network: encryption
at rest bound to owner and name, the key file, input checks, host binding, the installation
CA's leaves (verified by a real TLS handshake in memory) and placeholder substitution."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from stockade.net.authority import Authority
from stockade.net.intercept import Injection, substitute
from stockade.net.vault import SecretError, Vault

VALUE = "sk-unit-0123456789abcdef"


def test_value_is_encrypted_under_a_private_key(tmp_path: Path) -> None:
    vault = Vault(tmp_path)
    vault.put("tenant-a", "KEY", VALUE, ["api.example.com"])
    key = tmp_path / "private" / "secrets.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    store = list((tmp_path / "private" / "secrets").iterdir())
    assert len(store) == 1 and stat.S_IMODE(store[0].stat().st_mode) == 0o600
    assert VALUE.encode() not in store[0].read_bytes()
    again = Vault(tmp_path)  # a restarted engine: same key file, same value
    assert again.reveal("tenant-a", "KEY") == VALUE.encode()
    assert key.read_bytes() == (tmp_path / "private" / "secrets.key").read_bytes()


def test_a_row_copied_to_another_owner_or_name_does_not_decrypt(tmp_path: Path) -> None:
    vault = Vault(tmp_path)
    vault.put("tenant-a", "KEY", VALUE, ["api.example.com"])
    vault.put("tenant-b", "OTHER", "b-value", ["api.example.com"])
    a = json.loads(vault._path("tenant-a").read_text())
    b = json.loads(vault._path("tenant-b").read_text())
    b["KEY"] = b["OTHER"] = a["KEY"]  # an attacker with write access to the store
    vault._path("tenant-b").write_text(json.dumps(b))
    thief = Vault(tmp_path)
    for name in ("KEY", "OTHER"):
        with pytest.raises(InvalidTag):
            thief.reveal("tenant-b", name)
    assert thief.reveal("tenant-a", "KEY") == VALUE.encode()
    assert thief.get("tenant-b", "NOPE") is None and thief.list("tenant-c") == []


@pytest.mark.parametrize(
    "name, value, hosts, fragment",
    [
        ("OK", "v", ["1.2.3.4"], "IP addresses"),
        ("OK", "v", ["*"], "not a host name"),
        ("OK", "v", ["a.test/path"], "not a host name"),
        ("OK", "a\nb", ["a.test"], "line breaks"),
        ("OK", "caf\u00e9", ["a.test"], "ASCII"),
        ("OK", "v", [], "hosts"),
        ("../x", "v", ["a.test"], "name"),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, name: str, value: str, hosts: list[str], fragment: str) -> None:
    with pytest.raises(SecretError, match=fragment):
        Vault(tmp_path).put("t", name, value, hosts)


def test_wildcards_bind_subdomains_not_the_apex(tmp_path: Path) -> None:
    secret = Vault(tmp_path).put("t", "K", "v", ["*.Example.com.", "api.other.test"])
    assert secret.hosts == ("*.example.com", "api.other.test")
    assert secret.bound_to("a.example.com") and secret.bound_to("a.b.example.com")
    assert not secret.bound_to("example.com") and not secret.bound_to("evilexample.com")
    assert secret.bound_to("api.other.test") and not secret.bound_to("x.api.other.test")


def test_leaves_verify_against_the_installation_ca(tmp_path: Path) -> None:
    authority = Authority(tmp_path, None)
    bundle = authority.sandbox_bundle()
    assert stat.S_IMODE((tmp_path / "private" / "ca.key").stat().st_mode) == 0o600
    client = ssl.create_default_context(cafile=str(bundle))
    for name, ok in (("api.example.com", True), ("other.example.com", False)):
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        tls_client = client.wrap_bio(c_in, c_out, server_hostname=name)
        server = authority.context("api.example.com").wrap_bio(s_in, s_out, server_side=True)
        failed = None
        for _ in range(10):
            for side, out, into in ((tls_client, c_out, s_in), (server, s_out, c_in)):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLCertVerificationError as exc:
                    failed = exc
                except ssl.SSLError:  # the server hears the client's alert
                    assert failed is not None
                into.write(out.read())
        assert (failed is None) == ok, (name, failed)
        if ok:  # the handshake really completed, with the leaf for that name
            assert tls_client.getpeercert()["subjectAltName"] == (("DNS", name),)
    assert Authority(tmp_path, None).certificate() == authority.certificate()  # made once


def test_substitution_touches_only_the_secrets_given() -> None:
    mine = Injection("A", b"STOCKADE_SECRET_aa", b"real-a")
    used: dict[str, int] = {}
    head = b"GET /?k=STOCKADE_SECRET_aa HTTP/1.1\r\nX: STOCKADE_SECRET_aa STOCKADE_SECRET_bb\r\n\r\n"
    out = substitute(head, [mine], used)
    assert out == b"GET /?k=real-a HTTP/1.1\r\nX: real-a STOCKADE_SECRET_bb\r\n\r\n"
    assert used == {"A": 2}

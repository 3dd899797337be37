"""The cluster's pure parts: slots and resources, error round trips, and single-machine mode
staying free of Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stockade.cluster.host import Failure
from stockade.cluster.resources import bundle, capacity, default_slots, parse_slots
from stockade.cluster.router import raise_failure
from stockade.engine import Conflict, EngineError, SandboxNotFound


def test_slots_parse_and_bad_slots_say_what_is_wrong() -> None:
    assert parse_slots("container=8, gvisor=2") == {"container": 8, "gvisor": 2}
    assert parse_slots("") == {}
    with pytest.raises(ValueError, match="TIER=COUNT"):
        parse_slots("docker=3")
    with pytest.raises(ValueError, match="TIER=COUNT"):
        parse_slots("container")
    with pytest.raises(ValueError, match="whole number"):
        parse_slots("gvisor=-1")


def test_microvm_slots_only_with_kvm_or_an_explicit_tcg_allowance() -> None:
    plain = capacity({"container": 4, "microvm": 3}, kvm=False, allow_tcg=False)
    assert plain.ray_resources()["stockade_container"] == 4
    assert "stockade_microvm" not in plain.ray_resources() and "kvm" not in plain.ray_resources()
    tcg = capacity({"microvm": 3}, kvm=False, allow_tcg=True).ray_resources()
    assert tcg["stockade_microvm"] == 3 and "kvm" not in tcg
    kvm = capacity({"microvm": 3}, kvm=True, allow_tcg=False).ray_resources()
    assert kvm["stockade_microvm"] == 3 and kvm["kvm"] == 1
    assert default_slots(2048) == {"container": 4, "gvisor": 4, "microvm": 0}
    assert default_slots(100)["container"] == 1
    assert bundle("gvisor") == {"stockade_gvisor": 1.0}


def test_a_hosts_engine_error_comes_back_as_the_same_class() -> None:
    with pytest.raises(SandboxNotFound, match="gone"):
        raise_failure(Failure("sandbox_not_found", "gone"))
    with pytest.raises(Conflict):
        raise_failure(Failure("conflict", "paused"))
    with pytest.raises(EngineError) as caught:
        raise_failure(Failure("from_a_newer_host", "what"))
    assert caught.value.status == 500
    assert raise_failure(42) == 42


def test_single_machine_mode_never_imports_ray() -> None:
    code = (
        "import json, sys\n"
        "import stockade.cli.main, stockade.server.app, stockade.server.serve\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'ray' "
        "or m.startswith(('ray.', 'stockade.cluster')))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout) == []


def test_cluster_commands_refuse_bad_options_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from stockade.cli.main import app

    monkeypatch.delenv("STOCKADE_DATABASE_URL", raising=False)
    monkeypatch.setenv("STOCKADE_ADMIN_KEY", "k" * 32)
    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--cluster", "127.0.0.1:1"])
    assert r.exit_code == 2 and "postgresql://" in r.output
    r = runner.invoke(app, ["serve", "--cluster", "127.0.0.1:1", "--database-url", "sqlite:///x.db"])
    assert r.exit_code == 2 and "PostgreSQL" in r.output
    monkeypatch.setenv("STOCKADE_ADMIN_KEY", "short")
    r = runner.invoke(
        app, ["serve", "--cluster", "127.0.0.1:1", "--database-url", "postgresql://u@127.0.0.1/db"]
    )
    assert r.exit_code == 2 and "STOCKADE_ADMIN_KEY" in r.output
    r = runner.invoke(app, ["host", "--cluster", "127.0.0.1:1", "--slots", "docker=2"])
    assert r.exit_code == 2 and "TIER=COUNT" in r.output
    r = runner.invoke(app, ["host"])  # neither a cluster to join nor a command
    assert r.exit_code == 2 and "--cluster" in r.output and "drain" in r.output
    monkeypatch.delenv("STOCKADE_API_URL", raising=False)
    r = runner.invoke(app, ["host", "drain", "a"])  # drains go through a replica
    assert r.exit_code == 2 and "STOCKADE_API_URL" in r.output
    monkeypatch.setenv("STOCKADE_ADMIN_KEY", "k" * 32)
    monkeypatch.delenv("STOCKADE_CLUSTER_SECRET", raising=False)
    r = runner.invoke(
        app, ["serve", "--cluster", "127.0.0.1:1", "--database-url", "postgresql://u@127.0.0.1/db"]
    )
    assert r.exit_code != 0 and "STOCKADE_CLUSTER_SECRET" in str(r.exception or r.output)


def test_a_stream_token_opens_exactly_its_own_request_until_it_expires() -> None:
    from stockade.cluster.streams import operation
    from stockade.cluster.tokens import TOKEN_LIFETIME, sign, verify

    secret = "s" * 32
    op = operation("GET", "/sandboxes/sb1/files", "path=%2Fhome%2Fuser%2Fa")
    token = sign(secret, op, now=1000.0)
    assert verify(secret, op, token, now=1000.0 + TOKEN_LIFETIME - 1)
    assert not verify(secret, op, token, now=1000.0 + TOKEN_LIFETIME + 1)  # expired
    assert not verify("t" * 32, op, token, now=1000.0)  # another cluster's secret
    for other in (
        operation("GET", "/sandboxes/sb2/files", "path=%2Fhome%2Fuser%2Fa"),
        operation("PUT", "/sandboxes/sb1/files", "path=%2Fhome%2Fuser%2Fa"),
        operation("GET", "/sandboxes/sb1/files", "path=%2Fetc%2Fshadow"),
    ):
        assert not verify(secret, other, token, now=1000.0)
    expires, _, mac = token.partition(".")
    forged = f"{int(expires) + 3600}.{mac}"  # a later expiry under the same signature
    assert not verify(secret, op, forged, now=1000.0)
    for junk in ("", ".", "abc.def", "1000", f"{expires}."):
        assert not verify(secret, op, junk, now=1000.0)

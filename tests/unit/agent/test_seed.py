"""sys.seed: what the host sends after a snapshot restore (agent/main.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from stockade.agent import main
from stockade.agent.connection import AgentError


@pytest.mark.parametrize(
    "params",
    [
        {"hex": "zz"},
        {"hex": "00", "hostname": "bad_name"},
        {"hex": "00", "hostname": "-leading-dash"},
        {"hex": "00", "hostname": "a" * 64},
        {"hex": "00", "machine_id": "ABCDEF" * 5 + "00"},
        {"hex": "00", "machine_id": "0" * 31},
        {"hex": "00", "time": "now"},
        {"hex": "00", "time": True},
    ],
)
def test_bad_parameters_are_refused_before_anything_changes(params: dict[str, Any]) -> None:
    with pytest.raises(AgentError) as caught:
        main.seed(None, params)  # type: ignore[arg-type]
    assert caught.value.code.value == "bad_request"


@pytest.mark.skipif(os.geteuid() != 0, reason="reseeding the kernel's CRNG needs root")
def test_entropy_is_mixed_in_and_the_crng_reseeded() -> None:
    # Harmless on the host: more entropy and an early reseed of its CRNG.
    assert main.seed(None, {"hex": os.urandom(64).hex()}) == {"reseeded": True}  # type: ignore[arg-type]
    assert main.seed(None, {}) == {"reseeded": True}  # type: ignore[arg-type]  # old hosts: hex only


def test_setup_outside_a_microvm_guest_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """sys.setup runs the guest init's settings stage; where there is none (every container
    and gVisor sandbox, this host) it refuses instead of running anything."""
    monkeypatch.setattr(main, "SETTINGS", str(tmp_path / "absent.sh"))
    with pytest.raises(AgentError) as caught:
        main.setup(None, {})  # type: ignore[arg-type]
    assert caught.value.code.value == "bad_request" and "no settings stage" in str(caught.value)

"""Faults on every tier. (1) SIGKILL of the runtime and of the agent, idle, mid-exec and
mid-upload: a clear SandboxUnavailable, a working kill, nothing left on the host, the server
still up. (2) SIGKILL of the daemon (engine + server) or of the runtime (runc / runsc / QEMU)
at a random moment of pause, resume and kill, against a daemon of this module that is then
restarted: the sandbox settles into a clear state, comes back through the API with every
acknowledged write, and nothing is left once it is killed (stockade.security.pausefaults)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from stockade.security import TIERS
from stockade.security.daemon import PrivateDaemon
from stockade.security.faults import run_faults
from stockade.security.pausefaults import OPS, TARGETS, run_lifecycle_faults

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.mark.parametrize("tier", TIERS)
def test_faults_are_recovered(daemon: Any, tier: str) -> None:
    results = run_faults(tier, daemon.data_dir)
    assert len(results) == 3
    failed = [f"{r.fault}: {r.detail}" for r in results if not r.recovered]
    assert not failed, "\n".join(failed)


@pytest.fixture(scope="module")
def crashable() -> Iterator[PrivateDaemon]:
    """A daemon of this module's own, which the faults SIGKILL and restart."""
    owner = PrivateDaemon()
    with owner:
        yield owner
    assert not owner.leaks, f"the crashed and restarted daemon left things behind: {owner.leaks}"


@pytest.mark.parametrize("tier", TIERS)
def test_faults_during_pause_resume_and_kill(crashable: PrivateDaemon, tier: str) -> None:
    results = run_lifecycle_faults(tier, crashable)
    assert len(results) == len(OPS) * len(TARGETS) + 1  # and the final leak check
    failed = [f"{r.fault}: {r.detail}" for r in results if not r.recovered]
    assert not failed, "\n".join(failed)

"""SIGKILL of the runtime and of the agent, idle, mid-exec and mid-upload, on every tier:
a clear SandboxUnavailable, a working kill, nothing left on the host, the server still up.
(Engine SIGKILL and restart recovery are tested with the lifecycle limits, issue 2.)"""

from __future__ import annotations

from typing import Any

import pytest

from stockade.security import TIERS
from stockade.security.faults import run_faults

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.mark.parametrize("tier", TIERS)
def test_faults_are_recovered(daemon: Any, tier: str) -> None:
    results = run_faults(tier, daemon.data_dir)
    assert len(results) == 3
    failed = [f"{r.fault}: {r.detail}" for r in results if not r.recovered]
    assert not failed, "\n".join(failed)

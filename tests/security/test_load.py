"""A small, bounded load run per tier: concurrent clients creating, using and killing
sandboxes; no error but quota refusals, nothing left behind. Figures: bench/load.py."""

from __future__ import annotations

from typing import Any

import pytest

from stockade.security import TIERS
from stockade.security.load import run_load

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.mark.parametrize("tier", TIERS)
def test_concurrent_clients(daemon: Any, tier: str) -> None:
    result = run_load(tier, daemon.data_dir, clients=4, seconds=8, max_cycles=3)
    assert not result.errors, result.errors
    assert result.cycles >= 4, f"only {result.cycles} cycles completed"
    assert result.peak_concurrent >= 2, "the clients never overlapped"
    assert not result.leaks, result.leaks

"""Every attack of the corpus, on every tier: it must be blocked, contained or recovered from,
and the host's canaries must stay unread and unchanged (judged by stockade.security.runner).
Where an attack states the outcome expected on a tier (``# expect-<tier>:``), it must be that
one. The microVM tier runs the whole corpus in three VMs (about 2 minutes under TCG)."""

from __future__ import annotations

from typing import Any

import pytest

from stockade.security import TIERS, AttackResult, load_corpus, run_tier

pytestmark = [pytest.mark.root, pytest.mark.slow]
CORPUS = load_corpus()
CASES = [(tier, attack.name, user) for tier in TIERS for attack in CORPUS for user in attack.users]
_runs: dict[str, dict[tuple[str, str], AttackResult]] = {}
#: The neighbour may be at most this many times slower while another sandbox spins every CPU.
MAX_SLOWDOWN = 10.0
BY_NAME = {a.name: a for a in CORPUS}


@pytest.fixture(scope="module")
def results(daemon: Any) -> Any:
    """Run the corpus once per tier, on first use (about a minute per tier)."""

    def get(tier: str) -> dict[tuple[str, str], AttackResult]:
        if tier not in _runs:
            _runs[tier] = {(r.attack, r.user): r for r in run_tier(tier, daemon.data_dir, CORPUS)}
        return _runs[tier]

    return get


@pytest.mark.parametrize(("tier", "attack", "user"), CASES)
def test_attack_is_stopped(results: Any, tier: str, attack: str, user: str) -> None:
    result = results(tier)[(attack, user)]
    assert result.passed, f"{attack} as {user} on {tier}: {result.outcome}: {result.detail}"
    expected = BY_NAME[attack].expected(tier, user)
    assert expected in (None, result.outcome), (
        f"{attack} as {user} on {tier}: expected {expected}, got {result.outcome}: {result.detail}"
    )


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("check", ["neighbour_intact", "cleanup"])
def test_neighbour_untouched_and_nothing_left(results: Any, tier: str, check: str) -> None:
    result = results(tier)[(check, "-")]
    assert result.passed, result.detail


@pytest.mark.parametrize("tier", TIERS)
def test_cpu_hog_leaves_neighbour_responsive(results: Any, tier: str) -> None:
    figures = results(tier)[("cpu_hog", "user")].figures
    assert figures["slowdown"] < MAX_SLOWDOWN, figures


def test_verdicts_are_judged_by_the_host() -> None:
    """A secret in the output makes an attack 'succeeded' whatever it claims (runner unit)."""
    from pathlib import Path
    import tempfile

    from stockade.security.bait import Bait
    from stockade.security.runner import TierRun

    with tempfile.TemporaryDirectory(dir="/var/tmp") as d, Bait(Path(d)) as bait:
        run = TierRun("container", Path(d), bait, [])
        result = AttackResult("container", "x", "user", "blocked", "", 0.0)
        run._check_host(result, f"blocked, honest! {bait.canaries[0].read_text()}", "")
        assert result.outcome == "succeeded"
        bait.canaries[1].write_text("changed")
        result = AttackResult("container", "y", "user", "blocked", "", 0.0)
        run._check_host(result, "", "")
        assert result.outcome == "succeeded" and "secret.txt" in result.detail

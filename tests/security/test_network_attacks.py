"""Network attacks from inside a sandbox with an egress policy, on every tier with networking:
denied addresses, the host's addresses, the metadata address, foreign resolvers and DNS
tunnelling, DNS rebinding, IPv6, forged source addresses, ARP spoofing, another sandbox. The
sandboxes' uplink is a namespace this module creates (stockade.security.netplay), so nothing
can leave the machine; what arrives there, on the host and at the victim sandbox is judged."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from stockade.security import TIERS
from stockade.security.daemon import PrivateDaemon
from stockade.security.netattack import NetworkRefused, net_corpus, run_network
from stockade.security.netplay import Playground

pytestmark = [pytest.mark.root, pytest.mark.slow]
CASES = [(tier, a.name, user) for tier in TIERS for a in net_corpus() for user in a.users]
_runs: dict[str, dict[tuple[str, str], Any]] = {}


@pytest.fixture(scope="module")
def played() -> Iterator[tuple[Playground, Any]]:
    """A playground and a private daemon whose sandboxes' egress goes into it."""
    with Playground() as pg:
        owner = PrivateDaemon(env=pg.env())
        with owner as data_dir:
            yield pg, data_dir
    assert not owner.leaks, f"the network daemon left things behind: {owner.leaks}"


@pytest.fixture(scope="module")
def results(played: tuple[Playground, Any]) -> Any:
    def get(tier: str) -> dict[tuple[str, str], Any]:
        if tier not in _runs:
            pg, data_dir = played
            try:
                _runs[tier] = {(r.attack, r.user): r for r in run_network(tier, data_dir, pg)}
            except NetworkRefused as exc:  # no network on this tier (yet): nothing to attack
                _runs[tier] = {}
                pytest.skip(str(exc))
        if not _runs[tier]:
            pytest.skip(f"the {tier} tier has no network")
        return _runs[tier]

    return get


@pytest.mark.parametrize(("tier", "attack", "user"), CASES)
def test_network_attack_is_stopped(results: Any, tier: str, attack: str, user: str) -> None:
    result = results(tier)[(f"net_{attack}", user)]
    if attack == "control":  # the allowed path carries traffic: the denials below can fail
        assert result.outcome == "contained", result.detail
    else:  # contained: root's own kernel let it try (raw sockets in a microVM), nothing arrived
        assert result.outcome in ("blocked", "contained"), (
            f"{attack} on {tier}: {result.outcome}: {result.detail}"
        )


@pytest.mark.parametrize("tier", TIERS)
def test_network_sandboxes_leave_nothing(results: Any, tier: str) -> None:
    result = results(tier)[("net_cleanup", "-")]
    assert result.passed, result.detail

"""Egress policies: validation and the CIDR arithmetic (no root, no network)."""

from __future__ import annotations

import ipaddress

import pytest

from stockade.net.policy import NetworkPolicy, PolicyError, admissible


def ranges(value: dict) -> list[str]:
    policy = NetworkPolicy.parse(value)
    assert policy is not None
    return [str(n) for n in policy.allowed_ranges()]


def covers(value: dict, address: str) -> bool:
    policy = NetworkPolicy.parse(value)
    assert policy is not None
    return any(ipaddress.IPv4Address(address) in n for n in policy.allowed_ranges())


def test_none_means_no_network() -> None:
    assert NetworkPolicy.parse("none") is None and NetworkPolicy.parse(None) is None


def test_empty_policy_allows_nothing() -> None:
    assert ranges({"allow_out": []}) == []


def test_everything_excludes_always_denied_and_private() -> None:
    allowed = {"allow_out": ["0.0.0.0/0"]}
    for address in (
        "127.0.0.1",
        "169.254.169.254",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.1.2.3",
        "224.0.0.1",
        "255.255.255.255",
    ):
        assert not covers(allowed, address), address
    assert covers(allowed, "203.0.113.10") and covers(allowed, "8.8.8.8")


def test_narrower_deny_wins_and_allow_wins_ties() -> None:
    value = {"allow_out": ["0.0.0.0/0"], "deny_out": ["203.0.113.0/24"]}
    assert not covers(value, "203.0.113.10") and covers(value, "198.51.100.7")
    value = {"allow_out": ["1.2.3.4/32"], "deny_out": ["0.0.0.0/0"]}
    assert ranges(value) == ["1.2.3.4/32"]
    assert covers({"allow_out": ["5.0.0.0/8"], "deny_out": ["5.0.0.0/8"]}, "5.1.1.1")


def test_private_only_by_an_explicit_cidr_inside_it() -> None:
    assert ranges({"allow_out": ["10.1.2.0/24"]}) == ["10.1.2.0/24"]
    value = {"allow_out": ["10.0.0.0/8"], "deny_out": ["10.9.0.0/16"]}
    assert covers(value, "10.1.1.1") and not covers(value, "10.9.1.1")


@pytest.mark.parametrize(
    "value",
    [
        {"allow_out": ["127.0.0.1/32"]},
        {"allow_out": ["169.254.169.254"]},
        {"deny_out": ["example.com"]},
        {"allow_out": ["no spaces.com"]},
        {"allow_out": ["com"]},
        {"allow_out": ["1.2.3"]},
        {"allow": []},
        {"allow_out": "pypi.org"},
        "all",
        {"max_connections": 0},
        {"bandwidth_mbit": True},
    ],
)
def test_malformed_policies_are_refused(value: object) -> None:
    with pytest.raises(PolicyError):
        NetworkPolicy.parse(value)


def test_names_and_wildcards() -> None:
    policy = NetworkPolicy.parse({"allow_out": ["PyPI.org.", "*.example.com"]})
    assert policy is not None and policy.allow_out == ("pypi.org", "*.example.com")
    assert policy.allows_name("pypi.org") and policy.allows_name("PYPI.ORG.")
    assert not policy.allows_name("evil-pypi.org") and not policy.allows_name("a.pypi.org")
    assert policy.allows_name("a.example.com") and policy.allows_name("a.b.example.com")
    assert not policy.allows_name("example.com") and not policy.allows_name("badexample.com")
    assert not policy.resolves_any()
    assert NetworkPolicy(allow_out=("0.0.0.0/0",)).resolves_any()
    assert not NetworkPolicy(allow_out=("10.0.0.0/8",)).resolves_any()


def test_resolved_addresses_never_internal() -> None:
    assert admissible("203.0.113.10")
    for address in ("127.0.0.1", "169.254.169.254", "10.0.0.1", "192.168.0.1", "::1", "x"):
        assert not admissible(address)
    assert not admissible("203.0.113.10", [ipaddress.IPv4Network("203.0.113.0/24")])

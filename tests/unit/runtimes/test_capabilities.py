"""The per-tier capability table in docs/tiers.md is the drivers' declared data, and the engine
decides from that data (pause mode, 409 ``unsupported``), not from tier names."""

from __future__ import annotations

import re
from pathlib import Path

from stockade.engine.engine import TIERS
from stockade.engine.errors import Unsupported
from stockade.runtimes.base import Capabilities, NetworkAttachment, SandboxSpec, VolumeMount

DOC = Path(__file__).resolve().parents[3] / "docs" / "tiers.md"


def _doc_table() -> dict[str, dict[str, bool]]:
    text = DOC.read_text()
    block = text.split("<!-- capabilities:", 1)[1].split("<!-- end capabilities -->", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    tiers = [cell.strip() for cell in rows[0].strip("|").split("|")][1:]
    table: dict[str, dict[str, bool]] = {tier: {} for tier in tiers}
    for row in rows[2:]:
        name, *cells = [cell.strip() for cell in row.strip("|").split("|")]
        for tier, cell in zip(tiers, cells):
            assert cell in ("yes", "no"), f"{name}/{tier}: {cell!r} is neither yes nor no"
            table[tier][name.strip("`")] = cell == "yes"
    return table


def test_docs_table_is_the_declared_capabilities() -> None:
    table = _doc_table()
    assert sorted(table) == sorted(TIERS)
    for tier, cls in TIERS.items():
        declared = {name: getattr(cls.capabilities, name) for name in Capabilities.names()}
        assert table[tier] == declared, f"docs/tiers.md disagrees with the {tier} driver"


def test_pause_mode_follows_the_capabilities() -> None:
    plain = SandboxSpec(id="sbx", image="base")
    with_volume = SandboxSpec(id="sbx", image="base", volumes=(VolumeMount(Path("/v"), "/data"),))
    networked = SandboxSpec(
        id="sbx", image="base", network=NetworkAttachment(Path("/run/netns/x"), Path("/r"))
    )
    modes = {
        tier: tuple(cls.pause_mode(cls.__new__(cls), spec) for spec in (plain, with_volume, networked))
        for tier, cls in TIERS.items()
    }
    assert modes == {
        "container": ("freezer", "freezer", "freezer"),
        "gvisor": ("checkpoint", "checkpoint", "freezer"),
        "microvm": ("checkpoint", "freezer", "checkpoint"),
    }


def test_unsupported_names_the_tier_and_the_capability() -> None:
    error = Unsupported.missing("microvm", "files_snapshot", "snapshot sandbox sbx")
    assert error.status == 409 and error.code == "unsupported"
    assert re.search(r"microvm tier lacks the capability 'files_snapshot'", error.message)

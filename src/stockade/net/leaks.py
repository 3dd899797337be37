"""What a sandbox's network can leave behind on the host, for :mod:`stockade.engine.hostcheck`."""

from __future__ import annotations

import json
from pathlib import Path

from . import host
from .manager import engine_tag


def find_net_leaks(data_dir: Path, sandbox_id: str | None = None) -> list[str]:
    """Namespaces, veths, nft chains/sets, resolver state of ``sandbox_id`` (or, if None, of
    the whole engine, which must have stopped: its table, bridge and uplink too)."""
    tag = engine_tag(data_dir)
    state = data_dir / "net" / "sandboxes"
    leaks: list[str] = []
    if sandbox_id:
        if (host.NETNS_DIR / f"stockade-{tag}-{sandbox_id}").exists():
            leaks.append(f"network namespace stockade-{tag}-{sandbox_id}")
        leaks += [f"veth {v}" for v in host.links_sync(f"sv{tag}{sandbox_id[-8:]}")]
        table = host.nft_json_sync("table", "inet", f"stockade_{tag}")
        sid = sandbox_id.lower()
        for item in table.get("nftables", []):
            for kind in ("chain", "set", "map"):
                obj = item.get(kind, {})
                if obj.get("name") in (f"sb_{sid}", f"px_{sid}", f"c_{sid}", f"r_{sid}"):
                    leaks.append(f"nft {kind} {obj['name']}")
                for element in obj.get("elem", []) if kind in ("set", "map") else []:
                    if sandbox_id[-8:] in json.dumps(element):
                        leaks.append(f"nft element of {obj['name']} for {sandbox_id}")
        leaks += [f"resolver state {p}" for p in state.glob(f"{sandbox_id}.*")] if state.is_dir() else []
        return leaks
    leaks += [f"network namespace {n}" for n in host.netns_sync(f"stockade-{tag}-")]
    for prefix in ("sv", "sg", "su"):
        leaks += [f"interface {v}" for v in host.links_sync(f"{prefix}{tag}")]
    if f"stockade_{tag}" in host.tables_sync():
        leaks.append(f"nft table inet stockade_{tag}")
    if state.is_dir():
        leaks += [f"resolver state {p}" for p in state.iterdir()]
    return leaks

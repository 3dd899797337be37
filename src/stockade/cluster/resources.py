"""What a host offers as Ray resources, and what a sandbox asks of them (docs/cluster.md).

A host publishes one slot resource per tier it can run (``stockade_container``,
``stockade_gvisor``, ``stockade_microvm``) and ``kvm`` where guests really boot under KVM.
Each host also has a resource of its own name, so that a drain can fill exactly its free slots.
A sandbox's placement is a one-bundle Ray placement group asking for one slot of its tier:
Ray picks the node, keeps the count, and frees the slot when the group is removed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..models import Isolation

TIERS: tuple[Isolation, ...] = ("container", "gvisor", "microvm")
#: Memory a default sandbox is counted for when a host sizes its slots by itself.
SLOT_MEMORY_MB = 512


#: Units of a host's own resource (``stockade_host_<name>``): only drain holds ask for it.
HOST_UNITS = 10000.0


def host_resource(name: str) -> str:
    """The Ray resource only host ``name``'s node has: a placement asking for it lands there."""
    return f"stockade_host_{name}"


def slot_resource(tier: str) -> str:
    """The Ray resource that counts ``tier`` sandboxes."""
    return f"stockade_{tier}"


@dataclass(frozen=True)
class HostCapacity:
    """Slots per tier and whether KVM works; ``microvm`` slots exist only with KVM or an
    explicit TCG allowance (TCG guests are slow: an operator opts in)."""

    slots: dict[str, int]
    kvm: bool = False

    def ray_resources(self) -> dict[str, float]:
        """The custom resources the host's Ray node starts with."""
        found = {slot_resource(t): float(n) for t, n in self.slots.items() if n > 0}
        if self.kvm:
            found["kvm"] = 1.0
        return found


def parse_slots(text: str) -> dict[str, int]:
    """``"container=8,gvisor=8"`` as a mapping; ValueError names what is wrong."""
    slots: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tier, sep, count = part.partition("=")
        if not sep or tier not in TIERS:
            raise ValueError(f"slot {part!r} must look like TIER=COUNT with TIER one of {', '.join(TIERS)}")
        if not count.isdigit():
            raise ValueError(f"slot count {count!r} for {tier} must be a whole number")
        slots[tier] = int(count)
    return slots


def default_slots(memory_mb: int | None = None) -> dict[str, int]:
    """Container and gVisor slots sized by the host's memory; no microVM slots."""
    if memory_mb is None:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    count = max(1, memory_mb // SLOT_MEMORY_MB)
    return {"container": count, "gvisor": count, "microvm": 0}


def capacity(slots: dict[str, int], kvm: bool, allow_tcg: bool) -> HostCapacity:
    """The host's capacity: microVM slots are dropped unless KVM works or TCG is allowed."""
    merged = {**default_slots(), **slots}
    if not (kvm or allow_tcg):
        merged["microvm"] = 0
    return HostCapacity(slots=merged, kvm=kvm)


def bundle(tier: str) -> dict[str, float]:
    """The placement-group bundle one sandbox of ``tier`` takes."""
    return {slot_resource(tier): 1.0}

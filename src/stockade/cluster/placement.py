"""Placement by Ray resources: each sandbox holds one slot of its tier in a placement group.

A one-bundle placement group asking for ``stockade_<tier>: 1`` is scheduled by Ray onto a node
that has a free slot; the group costs no process, outlives the API replica that made it
(``lifetime="detached"``), and frees the slot when removed. Ray, not Stockade, keeps the count;
a group that fits nowhere stays pending (an autoscaler may add a node) until the wait runs out.

A draining host (``stockade host drain``) takes no new sandboxes: its free slots are taken by
**holds**, placement groups named ``drain:<host>:<random>`` that ask for a slot and for the
host's own resource (so they land there and nowhere else); undrain removes them. Ray then
places new sandboxes on the other hosts only, and the draining host's sandboxes run on.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from typing import Any

from ..engine import EngineError, InvalidRequest
from .resources import bundle, host_resource, slot_resource

#: How long a create waits for a free slot before it fails.
PLACEMENT_WAIT = 30.0
#: How long a hold waits for a slot on its host: placing a group takes milliseconds, so a
#: hold not placed by then means the host has no free slot of that tier left.
HOLD_WAIT = 1.0
#: The most holds one fill takes on one host and tier (a host's slots of a tier).
MAX_HOLDS = 4096


def hold_prefix(host: str) -> str:
    return f"drain:{host}:"


class NoCapacity(EngineError):
    """Every host offering the tier is full (or was, for the whole wait)."""

    code = "no_capacity"
    status = 503


@dataclass(frozen=True)
class Reservation:
    """A slot held for one sandbox: the placement group's name and the node it landed on."""

    name: str
    node_id: str


class Placer:
    """Reserves and releases sandbox slots through Ray placement groups."""

    def __init__(self, ray: Any, wait: float = PLACEMENT_WAIT) -> None:
        self._ray = ray
        self.wait = wait

    async def reserve(self, tier: str) -> Reservation:
        """A slot of ``tier`` on some host: InvalidRequest if no host offers the tier at all,
        NoCapacity if none has a free slot within :attr:`wait` seconds."""
        from ray.util.placement_group import placement_group, placement_group_table

        total = await asyncio.to_thread(self._ray.cluster_resources)
        if total.get(slot_resource(tier), 0) <= 0:
            raise InvalidRequest(
                f"no host in the cluster runs {tier!r} sandboxes; start a host "
                f"offering it ('stockade host --slots {tier}=N'; microvm also "
                f"needs --kvm or --allow-tcg)"
            )
        name = "sbp-" + secrets.token_hex(8)
        group = placement_group([bundle(tier)], strategy="STRICT_PACK", name=name, lifetime="detached")
        try:
            await asyncio.wait_for(group.ready(), self.wait)
        except asyncio.TimeoutError:
            self._remove(group)
            raise NoCapacity(
                f"every host offering {tier!r} is full: no slot came free within "
                f"{self.wait:g} s; kill a sandbox or add a host"
            ) from None
        except BaseException:
            self._remove(group)
            raise
        table = await asyncio.to_thread(placement_group_table, group)
        return Reservation(name=name, node_id=table["bundles_to_node_id"][0])

    async def fill(self, host: str, tiers: list[str]) -> int:
        """Take every free slot of ``tiers`` on ``host`` with holds; return how many."""
        from ray.util.placement_group import placement_group

        taken = 0
        for tier in tiers:
            for _ in range(MAX_HOLDS):
                group = placement_group(
                    [{**bundle(tier), host_resource(host): 1.0}],
                    strategy="STRICT_PACK",
                    lifetime="detached",
                    name=hold_prefix(host) + secrets.token_hex(6),
                )
                try:
                    await asyncio.wait_for(group.ready(), HOLD_WAIT)
                except asyncio.TimeoutError:
                    self._remove(group)
                    break
                except BaseException:
                    self._remove(group)
                    raise
                taken += 1
        return taken

    async def unhold(self, host: str) -> int:
        """Remove every hold on ``host`` (its slots are free for new sandboxes again)."""
        from ray.util import get_placement_group
        from ray.util.placement_group import placement_group_table

        table = await asyncio.to_thread(placement_group_table)
        names = [
            g["name"]
            for g in table.values()
            if g.get("name", "").startswith(hold_prefix(host)) and g.get("state") != "REMOVED"
        ]
        for name in names:
            with contextlib.suppress(ValueError):
                self._remove(await asyncio.to_thread(get_placement_group, name))
        return len(names)

    async def release(self, name: str) -> None:
        """Free the slot held under ``name`` (nothing if it is already free)."""
        from ray.util import get_placement_group

        try:
            group = await asyncio.to_thread(get_placement_group, name)
        except ValueError:
            return
        self._remove(group)

    @staticmethod
    def _remove(group: Any) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(group)

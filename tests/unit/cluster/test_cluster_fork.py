"""A fork through a cluster replica is refused clearly (409 unsupported), never forwarded to
the source's host behind the placer's back."""

from __future__ import annotations

import asyncio

import pytest

from stockade.cluster.engine import RemoteSandboxes
from stockade.engine import Unsupported
from stockade.runtimes.base import Resources


def test_fork_through_a_replica_is_unsupported() -> None:
    sandboxes = RemoteSandboxes(None, Resources())  # type: ignore[arg-type]  # never reached
    with pytest.raises(Unsupported, match="cluster replica"):
        sandboxes.fork_keeps_memory("sb1", None)
    with pytest.raises(Unsupported) as refused:
        asyncio.run(sandboxes.fork("sb1", 2))
    assert refused.value.status == 409

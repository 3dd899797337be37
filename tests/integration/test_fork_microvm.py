"""The microVM tier: a sandbox starts from a snapshot template (its layers flattened into the
guest's image disk, deletions included), and fork answers a clear 409 naming the capability it
lacks, creating nothing. Slow (QEMU TCG boots here): one module, one daemon."""

from __future__ import annotations

import secrets
from typing import Callable

import pytest

from stockade import ConflictError, Sandbox
from stockade.images import ImageStore

from tests.conftest import IMAGES_DIR, Daemon

pytestmark = pytest.mark.root


def test_microvm_starts_from_a_snapshot_and_refuses_fork(
    daemon: Daemon, make_sandbox: Callable[..., Sandbox]
) -> None:
    source = make_sandbox(isolation="container")
    source.files.write("/home/user/kept.txt", "made in a container")
    source.commands.run("rm /etc/debian_version", user="root")
    name = f"snap-{secrets.token_hex(4)}"
    source.snapshot(name)
    try:
        vm = make_sandbox(isolation="microvm", template=name)
        assert vm.files.read("/home/user/kept.txt") == "made in a container"
        assert not vm.files.exists("/etc/debian_version"), "a deletion carries over"
        assert vm.commands.run("python3 -c 'print(6*7)'").stdout == "42\n"
        before = {s.id for s in Sandbox.list()}
        with pytest.raises(ConflictError) as refused:
            vm.fork(1)
        assert "microvm tier" in str(refused.value) and "forks_files" in str(refused.value)
        assert {s.id for s in Sandbox.list()} == before
        vm.kill()
    finally:
        store = ImageStore(IMAGES_DIR)
        if store.exists(name):
            store.remove(name)

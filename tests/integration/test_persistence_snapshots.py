"""Snapshots: a sandbox's filesystem becomes a template that shares its parent's layers."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from stockade import ConflictError, Sandbox
from stockade.images import ImageStore

from tests.conftest import IMAGES_DIR, Daemon


@pytest.fixture
def template_name(daemon: Daemon) -> Iterator[Callable[[], str]]:
    """Names for the test's templates, removed at teardown (children first)."""
    made: list[str] = []

    def make() -> str:
        made.append(f"snap-{secrets.token_hex(4)}")
        return made[-1]

    yield make
    store = ImageStore(IMAGES_DIR)
    for name in reversed(made):
        if store.exists(name):
            store.remove(name)


@pytest.mark.parametrize("tier", ["container", "gvisor"])
@pytest.mark.parametrize("state", ["running", "stopped", "paused"])
def test_snapshot_template_starts_with_the_snapshot_files(
    make_sandbox: Callable[..., Sandbox], template_name: Callable[[], str], tier: str, state: str
) -> None:
    sb = make_sandbox(isolation=tier, persistence="workspace")
    sb.files.write("/home/user/model.txt", "weights")
    sb.commands.run(
        "mkdir -p /opt/app && echo 1 > /opt/app/v && chmod 4755 /opt/app/v && rm /etc/motd",
        user="root",
        check=True,
    )
    if state == "stopped":
        sb.stop()
    elif state == "paused":
        sb.pause()
    name = template_name()
    info = sb.snapshot(name)
    assert info["parent"] == "base" and info["name"] == name
    # The template holds only the changes: far smaller than the base image.
    assert info["size_bytes"] < 1 << 20
    with pytest.raises(ConflictError, match="already exists"):
        sb.snapshot(name)

    for new_tier in ("container", "gvisor"):
        child = make_sandbox(template=name, isolation=new_tier)
        assert child.info.template == name
        assert child.files.read("/home/user/model.txt") == "weights"
        check = child.commands.run(
            'cat /opt/app/v; python3 -c \'import os,stat; s=os.stat("/opt/app/v"); '
            "print(oct(stat.S_IMODE(s.st_mode)), s.st_uid)'; test -e /etc/motd || echo no-motd; "
            "test -e /etc/hostname && echo base-kept",
            user="root",
        )
        assert check.stdout.split() == ["1", "0o4755", "0", "no-motd", "base-kept"]
        assert child.files.read("/home/user/model.txt") == "weights"


def test_snapshot_of_snapshot_chains_layers(
    make_sandbox: Callable[..., Sandbox], template_name: Callable[[], str]
) -> None:
    sb = make_sandbox(isolation="container")
    sb.files.write("/home/user/one.txt", "1")
    first = template_name()
    sb.snapshot(first)
    child = make_sandbox(isolation="container", template=first)
    child.files.write("/home/user/two.txt", "2")
    child.files.remove("/home/user/one.txt")
    second = template_name()
    assert child.snapshot(second)["parent"] == first
    grandchild = make_sandbox(isolation="gvisor", template=second)
    assert grandchild.files.read("/home/user/two.txt") == "2"
    assert not grandchild.files.exists("/home/user/one.txt")
    store = ImageStore(IMAGES_DIR)
    with pytest.raises(Exception, match="parent of"):
        store.remove(first)

"""The file API never reads or writes outside the sandbox's root: not with '..', not with
absolute host paths, not through links the sandbox planted, not even while a loop in the
sandbox swaps a file for a link to the host in the middle of the requests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade import Sandbox, StockadeError
from stockade.security.bait import Bait

pytestmark = [pytest.mark.root]


@pytest.fixture
def bait(daemon: Any) -> Iterator[Bait]:
    with Bait(daemon.data_dir) as planted:
        yield planted
    # Checked once more after the test: nothing on the host changed.


def _attempts(canary: Path) -> list[str]:
    return [
        str(canary),
        "../../../../../../.." + str(canary),
        "/proc/1/root" + str(canary),
        "/.stockade/run/../../../../.." + str(canary),
        f"/home/user/../../{canary}",
    ]


def _assert_host_clean(bait: Bait, *outputs: str) -> None:
    assert not bait.leaked(*outputs), "a host secret came back through the file API"
    assert not bait.violations(), f"the host changed: {bait.violations()}"


def test_traversal_paths_stay_inside(sandbox: Sandbox, bait: Bait) -> None:
    seen = []
    for canary in bait.canaries:
        for path in _attempts(canary):
            for user in ("user", "root"):
                try:
                    seen.append(sandbox.files.read(path, user=user))
                except StockadeError:
                    pass
                try:
                    seen.append(str(sandbox.files.list(str(Path(path).parent), user=user)))
                except StockadeError:
                    pass
                # Writing at the host path must create a file inside the sandbox, if anything.
                try:
                    sandbox.files.write(path, "overwritten", user=user)
                except StockadeError:
                    pass
                try:
                    sandbox.files.remove(str(Path(path).parent), user=user)
                except StockadeError:
                    pass
    _assert_host_clean(bait, *seen)


def test_planted_symlinks_resolve_inside(sandbox: Sandbox, bait: Bait) -> None:
    targets = " ".join(str(c) for c in bait.canaries)
    sandbox.commands.run(
        f"i=0; for t in {targets}; do ln -s $t ~/l$i; ln -s /proc/1/root$t "
        f"~/p$i; i=$((i+1)); done; ln -s / ~/rootlink",
        check=True,
    )
    seen = []
    for name in ("l0", "l1", "p0", "p1"):
        for op in ("read", "write", "stat"):
            try:
                if op == "read":
                    seen.append(sandbox.files.read(f"/home/user/{name}"))
                elif op == "write":
                    sandbox.files.write(f"/home/user/{name}", "through the link")
                else:
                    seen.append(str(sandbox.files.get_info(f"/home/user/{name}")))
            except StockadeError:
                pass
    for canary in bait.canaries:
        try:
            seen.append(sandbox.files.read(f"/home/user/rootlink{canary}"))
        except StockadeError:
            pass
    _assert_host_clean(bait, *seen)


def test_links_swapped_mid_request(sandbox: Sandbox, bait: Bait) -> None:
    """A loop in the sandbox flips a name between a file and a link to the host canary."""
    canary = bait.canaries[0]
    swap = (
        f"while true; do echo inside > ~/f.tmp; mv -f ~/f.tmp ~/f; "
        f"ln -sfn {canary} ~/f; ln -sfn /proc/1/root{canary} ~/f; done"
    )
    flipper = sandbox.commands.run(swap, background=True, timeout=60)
    seen, reads, writes = [], 0, 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            try:
                seen.append(sandbox.files.read("/home/user/f"))
                reads += 1
            except StockadeError:
                pass
            try:
                sandbox.files.write("/home/user/f", "from the API " * 100)
                writes += 1
            except StockadeError:
                pass
    finally:
        flipper.kill()
    assert reads + writes > 10, "the race never ran"
    _assert_host_clean(bait, *seen)


def test_user_cannot_read_root_files(sandbox: Sandbox) -> None:
    from stockade import PermissionDeniedError

    with pytest.raises(PermissionDeniedError):
        sandbox.files.read("/etc/shadow", user="user")
    with pytest.raises(StockadeError):
        sandbox.files.write("/etc/passwd", "user::0:0::/:/bin/sh", user="user")

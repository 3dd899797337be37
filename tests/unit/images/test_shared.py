"""Templates on shared storage: published by one store, adopted by another, once, replaced when
the original is, and dropped when it is deleted (stockade.images.shared). A publisher killed
mid-copy leaves nothing adoptable, and a copy damaged on shared storage is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from stockade.images.manifest import DamagedCopy
from stockade.images.shared import ABANDONED, SharedTemplates, marker
from stockade.images.store import ImageInUse, ImageStore


def _image(
    store: ImageStore, name: str, text: str, *, parent: str | None = None, owner: str | None = None
) -> None:
    with store.staging(name) as staging:
        (staging.path / "rootfs" / "usr" / "bin").mkdir(parents=True)
        (staging.path / "rootfs" / "usr" / "bin" / "python3").write_text("#!/bin/sh\n")
        (staging.path / "rootfs" / "usr" / "bin" / "python3").chmod(0o755)
        (staging.path / "rootfs" / f"{name}.txt").write_text(text)
        store.install(
            name, staging, source="test", parent=parent, owner=owner, hidden=name.startswith("cache-")
        )


@pytest.fixture
def hosts(tmp_path: Path) -> tuple[ImageStore, ImageStore, SharedTemplates]:
    """Two hosts' stores, each with its own operator template ``base``, and shared storage."""
    a, b = ImageStore(tmp_path / "a"), ImageStore(tmp_path / "b")
    _image(a, "base", "a's base")
    _image(b, "base", "b's base")
    return a, b, SharedTemplates(tmp_path / "shared" / "templates")


def test_a_published_template_is_adopted_with_its_layers_but_not_the_operators(
    hosts: tuple[ImageStore, ImageStore, SharedTemplates],
) -> None:
    a, b, shared = hosts
    _image(a, "cache-1", "layer", parent="base", owner="t1")
    _image(a, "ml", "top", parent="cache-1", owner="t1")
    version = shared.publish(a, "ml")
    assert marker(a, "ml") == version and marker(a, "base") is None
    assert {i.name for i in shared.list()} == {"ml", "cache-1"}  # base is every host's own

    assert shared.needs(b, "ml")
    assert shared.adopt(b, "ml")
    assert (b.rootfs("ml") / "ml.txt").read_text() == "top"
    assert (b.rootfs("cache-1") / "cache-1.txt").read_text() == "layer"
    assert (b.rootfs("base") / "base.txt").read_text() == "b's base"  # kept
    assert b.get("ml").owner == "t1" and b.get("ml").parent == "cache-1"
    assert not shared.needs(b, "ml") and not shared.adopt(b, "ml")
    assert not shared.adopt(b, "nosuch")


def test_two_adopters_at_once_copy_once(hosts: tuple[ImageStore, ImageStore, SharedTemplates]) -> None:
    a, b, shared = hosts
    _image(a, "snap", "x", parent="base", owner="t1")
    shared.publish(a, "snap")
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(shared.adopt(b, "snap"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]


def test_a_replaced_original_replaces_the_copy_and_a_deleted_one_makes_it_stale(
    hosts: tuple[ImageStore, ImageStore, SharedTemplates],
) -> None:
    a, b, shared = hosts
    _image(a, "snap", "one", parent="base", owner="t1")
    shared.publish(a, "snap")
    shared.adopt(b, "snap")
    a.remove("snap")
    _image(a, "snap", "two", parent="base", owner="t1")
    shared.publish(a, "snap")
    assert len([p for p in (shared.root / "snap").iterdir() if not p.name.startswith(".")]) == 1
    assert shared.stale(b) == ["snap"] and shared.needs(b, "snap")
    assert shared.adopt(b, "snap")
    assert (b.rootfs("snap") / "snap.txt").read_text() == "two"

    # A copy that something is built on is not replaced behind its back.
    _image(b, "child", "c", parent="snap", owner="t1")
    a.remove("snap")
    _image(a, "snap", "three", parent="base", owner="t1")
    shared.publish(a, "snap")
    with pytest.raises(ImageInUse):
        shared.adopt(b, "snap")
    b.remove("child")

    shared.remove("snap")
    assert shared.current("snap") is None and shared.list() == []
    assert shared.stale(b) == ["snap"] and not shared.needs(b, "snap")
    assert shared.stale(a) == ["snap"]  # the publisher's own copy too


def test_deleting_a_template_removes_the_layers_only_it_used(
    hosts: tuple[ImageStore, ImageStore, SharedTemplates],
) -> None:
    a, _, shared = hosts
    _image(a, "cache-1", "shared layer", parent="base", owner="t1")
    _image(a, "cache-2", "own layer", parent="cache-1", owner="t1")
    _image(a, "one", "1", parent="cache-2", owner="t1")
    _image(a, "two", "2", parent="cache-1", owner="t1")
    shared.publish(a, "one")
    shared.publish(a, "two")
    shared.remove("one")
    assert {i.name for i in shared.list()} == {"two", "cache-1"}
    shared.remove("two")
    assert shared.list() == []


def _publish_and_die(stores: Path, shared: Path, name: str) -> None:
    """Publish ``name`` from the store under ``stores / 'a'`` in another process and kill it
    with SIGKILL while it copies (the staging directory has its rootfs, not yet its image.json)."""
    code = (
        "import sys; from pathlib import Path; from stockade.images.shared import SharedTemplates;"
        "from stockade.images.store import ImageStore;"
        "SharedTemplates(Path(sys.argv[2])).publish(ImageStore(Path(sys.argv[1])), sys.argv[3])"
    )
    publisher = subprocess.Popen([sys.executable, "-c", code, str(stores / "a"), str(shared), name])
    try:
        deadline = time.monotonic() + 30
        while not any((p / "rootfs").is_dir() for p in (shared / name).glob(".*.tmp")):
            assert publisher.poll() is None, "the publisher finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.001)
    finally:
        publisher.send_signal(signal.SIGKILL)
        publisher.wait()
    assert publisher.returncode == -signal.SIGKILL


def test_a_publisher_killed_mid_copy_leaves_nothing_adoptable(
    hosts: tuple[ImageStore, ImageStore, SharedTemplates], tmp_path: Path
) -> None:
    a, b, shared = hosts
    _image(a, "big", "first", parent="base", owner="t1")
    first = shared.publish(a, "big")
    a.remove("big")  # made again, bigger: its publication is killed half-way
    _image(a, "big", "second", parent="base", owner="t1")
    with open(a.rootfs("big") / "blob", "wb") as f:
        for _ in range(256):
            f.write(b"\1" * (1 << 20))
    _publish_and_die(tmp_path, shared.root, "big")

    (left,) = [p for p in (shared.root / "big").iterdir() if p.name.endswith(".tmp")]
    assert shared.current("big") == (first, shared.root / "big" / first)  # the whole old one
    assert shared.adopt(b, "big")
    assert (b.rootfs("big") / "big.txt").read_text() == "first" and not (b.rootfs("big") / "blob").exists()
    assert (a.rootfs("big") / "big.txt").read_text() == "second"  # the publisher's own copy intact
    assert (a.rootfs("big") / "blob").stat().st_size == 256 << 20

    os.utime(left, (time.time() - 2 * ABANDONED,) * 2)  # long dead: the next publication sweeps it
    second = shared.publish(a, "big")
    assert sorted(p.name for p in (shared.root / "big").iterdir()) == [second]
    assert shared.adopt(b, "big") and (b.rootfs("big") / "blob").stat().st_size == 256 << 20


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda rootfs: os.truncate(rootfs / "snap.txt", 2), "/snap.txt: 2 bytes"),
        (lambda rootfs: (rootfs / "snap.txt").write_text("PUBLISHED TEXT"), "/snap.txt: 14 bytes, sha256"),
        (lambda rootfs: (rootfs / "snap.txt").unlink(), "/snap.txt: missing"),
        (lambda rootfs: (rootfs / "added").write_text("x"), "/added: 1 bytes"),
        (lambda rootfs: (rootfs / "snap.txt").chmod(0o4755), "mode 104755"),
        (lambda rootfs: (rootfs.parent / "image.json").write_text("{}"), "image.json is unreadable"),
        (
            lambda rootfs: (rootfs.parent / "image.json").write_text(
                (rootfs.parent / "image.json").read_text().replace('"t1"', '"t2"')
            ),
            "image.json differs",
        ),
        (lambda rootfs: (rootfs.parent / "manifest.json").write_text('{"rootfs"'), "no readable manifest"),
    ],
)
def test_a_copy_damaged_on_shared_storage_is_refused_and_the_publisher_keeps_its_own(
    hosts: tuple[ImageStore, ImageStore, SharedTemplates], damage: Callable[[Path], object], named: str
) -> None:
    a, b, shared = hosts
    _image(a, "snap", "published text", parent="base", owner="t1")
    version = shared.publish(a, "snap")
    damage(shared.root / "snap" / version / "rootfs")
    with pytest.raises(DamagedCopy) as caught:
        shared.adopt(b, "snap")
    assert f"template 'snap' on shared storage (version {version})" in str(caught.value)
    assert named in str(caught.value), caught.value
    assert not b.exists("snap")
    assert [
        p.name for p in b.root.iterdir() if "snap" in p.name and p.suffix != ".lock"
    ] == []  # no copy left
    assert (a.rootfs("snap") / "snap.txt").read_text() == "published text" and marker(a, "snap") == version

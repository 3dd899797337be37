"""Templates on shared storage: published by one store, adopted by another, once, replaced when
the original is, and dropped when it is deleted (stockade.images.shared)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from stockade.images.shared import SharedTemplates, marker
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

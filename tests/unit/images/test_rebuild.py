"""An image built here is current only while the package list it was built from is unchanged:
changing ``PACKAGES`` (python3-pylsp, added for Daytona's language servers) makes the next
``stockade image build`` rebuild the base, and the templates built on the old base with it.
A rebuild is safe for the sandboxes running from the old image: its tree is kept aside until
no overlay uses the image, and concurrent builds of a stale image make it once."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from stockade.images import ImageStore, build
from stockade.images.build import PACKAGES, build_base_image, current

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")
OLD_LIST = tuple(p for p in PACKAGES if p != "python3-pylsp")


def _install(store: ImageStore, name: str, source: str, packages: tuple[str, ...], text: str = "") -> None:
    with store.staging(name) as staging:
        (staging.path / "rootfs" / "usr" / "bin").mkdir(parents=True)
        (staging.path / "rootfs" / "etc").mkdir()
        for file in ("version", "never-read-before"):
            (staging.path / "rootfs" / "etc" / file).write_text(text)
        store.install(name, staging, source=source, packages=packages, replace=store.exists(name))


def test_an_image_built_from_another_package_list_is_not_current(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    assert current(store, "base", PACKAGES) is None  # missing
    _install(store, "base", "mmdebstrap bookworm", OLD_LIST)
    assert current(store, "base", PACKAGES) is None  # built before python3-pylsp was added
    _install(store, "fresh", "mmdebstrap bookworm", PACKAGES)
    found = current(store, "fresh", PACKAGES)
    assert found is not None and "python3-pylsp" in found.packages
    assert current(store, "fresh", tuple(reversed(PACKAGES))) is None  # order is part of the list
    _install(store, "ci", "template code-interpreter from base", (*OLD_LIST, "python3-numpy"))
    assert current(store, "ci", (*PACKAGES, "python3-numpy")) is None
    # An image of that name the operator imported is theirs: never rebuilt over.
    _install(store, "mine", "rootfs tar /tmp/x.tar", ())
    assert current(store, "mine", PACKAGES) is not None


@needs_root
def test_a_stale_base_is_rebuilt_once_under_running_sandboxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mmdebstrap is replaced by a tiny tree maker (the real one is in test_image_build.py);
    the store, its locks, the overlay and the swap are real."""
    store = ImageStore(tmp_path / "images")
    _install(store, "base", "mmdebstrap bookworm", OLD_LIST, "old")
    made: list[float] = []

    def fake_mmdebstrap(rootfs: Path, staging: object, report: object) -> None:
        made.append(time.monotonic())
        time.sleep(0.5)  # long enough for the second builder to be waiting on the lock
        (rootfs / "etc").mkdir(parents=True)
        (rootfs / "etc" / "version").write_text("new")

    monkeypatch.setattr(build, "_run_mmdebstrap", fake_mmdebstrap)
    sandbox = tmp_path / "sandbox"
    for d in ("upper", "work", "root"):
        (sandbox / d).mkdir(parents=True)
    lower = store.idmapped_rootfs("base", 100000)  # as a sandbox's overlay names it
    options = f"lowerdir={lower},upperdir={sandbox / 'upper'},workdir={sandbox / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(sandbox / "root")], check=True)
    try:
        results: list[object] = []
        builders = [threading.Thread(target=lambda: results.append(build_base_image(store))) for _ in "ab"]
        for t in builders:
            t.start()
        for t in builders:
            t.join()
        assert len(made) == 1  # the second builder found it built while it waited
        assert results[0] == results[1] == store.get("base")
        assert store.get("base").packages == PACKAGES
        assert (store.rootfs("base") / "etc" / "version").read_text() == "new"
        assert (lower / "etc" / "version").read_text() == "new"  # its id-mapped copy came too
        assert os.stat(lower / "etc" / "version").st_uid == 100000
        # The running sandbox keeps its files, including ones it never looked up before.
        assert (sandbox / "root" / "etc" / "version").read_text() == "old"
        assert (sandbox / "root" / "etc" / "never-read-before").read_text() == "old"
        retired = [e for e in os.listdir(store.root) if e.startswith(".retired-base-")]
        assert len(retired) == 1
        with store.staging("other"):  # a later build sweeps: still in use, still kept
            pass
        assert (store.root / retired[0] / "rootfs" / "etc" / "version").read_text() == "old"
        assert build_base_image(store) == results[0] and len(made) == 1  # current: no rebuild
    finally:
        subprocess.run(["umount", str(sandbox / "root")], check=True)
    assert build_base_image(store) == results[0]  # nothing uses the image now: the old tree goes
    assert not [e for e in os.listdir(store.root) if e.startswith((".retired-", ".trash-"))]
    assert (store.rootfs("base") / "etc" / "version").read_text() == "new"

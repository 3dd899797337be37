"""An image built here is current only while the package list it was built from is unchanged:
changing ``PACKAGES`` (python3-pylsp, added for Daytona's language servers) makes the next
``stockade image build`` rebuild the base, and the templates built on the old base with it."""

from __future__ import annotations

from pathlib import Path

from stockade.images import ImageStore
from stockade.images.build import PACKAGES, current


def _install(store: ImageStore, name: str, source: str, packages: tuple[str, ...]) -> None:
    with store.staging(name) as staging:
        (staging.path / "rootfs" / "usr" / "bin").mkdir(parents=True)
        store.install(name, staging, source=source, packages=packages)


def test_an_image_built_from_another_package_list_is_not_current(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    assert current(store, "base", PACKAGES) is None  # missing
    _install(store, "base", "mmdebstrap bookworm", tuple(p for p in PACKAGES if p != "python3-pylsp"))
    assert current(store, "base", PACKAGES) is None  # built before python3-pylsp was added
    _install(store, "fresh", "mmdebstrap bookworm", PACKAGES)
    found = current(store, "fresh", PACKAGES)
    assert found is not None and "python3-pylsp" in found.packages
    _install(store, "ci", "template code-interpreter from base", (*PACKAGES[:-1], "python3-numpy"))
    assert current(store, "ci", (*PACKAGES, "python3-numpy")) is None
    # An image of that name the operator imported is theirs: never rebuilt over.
    _install(store, "mine", "rootfs tar /tmp/x.tar", ())
    assert current(store, "mine", PACKAGES) is not None

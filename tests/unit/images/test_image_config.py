"""image.json's owner, config and hidden fields: stored, read back, inherited from the parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade.images import CorruptImage, ImageStore


def add(store: ImageStore, name: str, **kwargs: object) -> None:
    with store.staging(name) as staging:
        (staging.path / "rootfs").mkdir()
        store.install(name, staging, source="test", **kwargs)  # type: ignore[arg-type]


def test_fields_round_trip_and_config_is_inherited(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    config = {"env": {"A": "1"}, "workdir": "/srv", "user": "app"}
    add(store, "parent", owner="acme", config=config)
    add(store, "layer", parent="parent", hidden=True)
    add(store, "other", parent="layer", config={"env": {}, "workdir": None, "user": "x"})
    parent, layer, other = (store.get(n) for n in ("parent", "layer", "other"))
    assert (parent.owner, parent.config, parent.hidden) == ("acme", config, False)
    assert (layer.owner, layer.config, layer.hidden) == (None, config, True)
    assert other.config == {"env": {}, "workdir": None, "user": "x"}
    plain = json.loads((tmp_path / "layer" / "image.json").read_text())
    assert "owner" not in plain and plain["hidden"] is True


def test_a_bad_config_is_a_corrupt_image(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    add(store, "img")
    path = tmp_path / "img" / "image.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "config": {"env": {"A": 1}}}))
    with pytest.raises(CorruptImage, match="config.env"):
        store.get("img")

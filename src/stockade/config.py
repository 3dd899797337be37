"""Where Stockade keeps things when nobody says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = Path("/var/lib/stockade")


def default_data_dir() -> Path:
    """``$STOCKADE_DATA_DIR``, else /var/lib/stockade."""
    return Path(os.environ.get("STOCKADE_DATA_DIR") or DEFAULT_DATA_DIR)


def default_images_dir(data_dir: Path | None = None) -> Path:
    """``$STOCKADE_IMAGES_DIR``, else ``<data dir>/images`` (several data dirs may share one)."""
    env = os.environ.get("STOCKADE_IMAGES_DIR")
    return Path(env) if env else (data_dir or default_data_dir()) / "images"


def local_socket(data_dir: Path | None = None) -> Path:
    """The local daemon's unix socket."""
    return (data_dir or default_data_dir()) / "private" / "stockade.sock"

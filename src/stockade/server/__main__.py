"""``python -m stockade.server``: the local daemon the SDK starts on demand."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import default_data_dir, local_socket
from ..engine import EngineConfig
from .serve import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stockade.server")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--idle-exit", type=float, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or default_data_dir()
    serve(
        EngineConfig(data_dir=data_dir),
        uds=local_socket(data_dir),
        idle_exit=args.idle_exit,
        log_level="warning",
    )


main()

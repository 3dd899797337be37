"""The local daemon: started on demand by the SDK, gone by itself once idle."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conftest import IMAGES_DIR, needs_root

from stockade.config import local_socket
from stockade.engine.hostcheck import find_leaks


def test_sdk_starts_the_daemon_and_it_exits_when_idle() -> None:
    needs_root()
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-idle-", dir="/var/tmp"))
    env = {
        **os.environ,
        "STOCKADE_DATA_DIR": str(data_dir),
        "STOCKADE_IMAGES_DIR": str(IMAGES_DIR),
        "STOCKADE_DAEMON_IDLE_EXIT": "3",
        "STOCKADE_POOL_SIZE": "0",
    }
    script = (
        "from stockade import Sandbox\n"
        "with Sandbox.create() as sb:\n"
        "    print(sb.commands.run('echo up').stdout, end='')\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.stdout == "up\n", out.stderr
        sock = local_socket(data_dir)
        deadline = time.monotonic() + 30
        while sock.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not sock.exists(), "the idle daemon did not exit"
        assert find_leaks(data_dir) == []
    finally:
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)

"""find_leaks reports runtime command lines still running against a data directory's runtime
root (a runc/runsc checkpoint, pause or delete the engine started and lost in a crash): they
live outside the sandbox's cgroup, so the cgroup check cannot see them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from stockade.engine.hostcheck import find_leaks


def test_a_lost_runtime_command_is_a_leak(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "runsc"  # a stand-in runsc: Debian's python3 under that name
    fake.parent.mkdir()
    fake.symlink_to("/usr/bin/python3")
    data_dir = tmp_path / "data"
    root = data_dir / "runtime" / "gvisor"
    proc = subprocess.Popen(
        [str(fake), "-c", "import time; time.sleep(60)", f"--root={root}", "checkpoint", "sbLost"]
    )
    try:
        deadline = time.monotonic() + 10
        while not (found := find_leaks(data_dir, "sbLost")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(f"runtime command {proc.pid} " in leak for leak in found), found
        assert not [leak for leak in find_leaks(data_dir, "sbOther") if "runtime command" in leak]
    finally:
        proc.kill()
        proc.wait()
    assert not find_leaks(data_dir, "sbLost")

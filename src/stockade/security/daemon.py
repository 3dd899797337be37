"""A throwaway daemon for the battery: its own data directory, the installed images, stopped by
its pid. The battery plants canaries in the data directory and reads the host's cgroups, so it
runs on the host, as root, against a daemon it owns (never against production state)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import default_images_dir, local_socket


class PrivateDaemon:
    """``with PrivateDaemon() as data_dir:`` a running ``python -m stockade.server``."""

    def __enter__(self) -> Path:
        if os.geteuid() != 0:
            raise PermissionError("the security battery needs root (it runs real sandboxes and "
                                  "inspects the host); run it with sudo")
        self.data_dir = Path(tempfile.mkdtemp(prefix="stockade-security-", dir="/var/tmp"))
        env = {**os.environ, "STOCKADE_IMAGES_DIR": str(default_images_dir())}
        with open(self.data_dir / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "stockade.server", "--data-dir",
                                          str(self.data_dir)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, env=env)
        sock = local_socket(self.data_dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited; see {self.data_dir / 'daemon.log'}")
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(sock))
                    return self.data_dir
                except OSError:
                    time.sleep(0.05)
        raise RuntimeError(f"the daemon did not answer; see {self.data_dir / 'daemon.log'}")

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)

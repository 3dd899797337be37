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
from ..engine.hostcheck import find_leaks


class PrivateDaemon:
    """``with PrivateDaemon() as data_dir:`` a running ``python -m stockade.server``.

    ``crash()`` SIGKILLs it (engine and server are one process) and ``restart()`` starts a new
    one on the same data directory, as after a crash in production."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        #: Extra environment of the daemon (e.g. the network playground's uplink).
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Path:
        if os.geteuid() != 0:
            raise PermissionError(
                "the security battery needs root (it runs real sandboxes and "
                "inspects the host); run it with sudo"
            )
        self.data_dir = Path(tempfile.mkdtemp(prefix="stockade-security-", dir="/var/tmp"))
        try:
            self.restart()
        except BaseException:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise
        return self.data_dir

    def restart(self) -> None:
        """Start the daemon and wait until it answers."""
        env = {**os.environ, "STOCKADE_IMAGES_DIR": str(default_images_dir()), **self.env}
        with open(self.data_dir / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stockade.server", "--data-dir", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        sock = local_socket(self.data_dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited; see {self.data_dir / 'daemon.log'}")
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(sock))
                    return
                except OSError:
                    time.sleep(0.05)
        raise RuntimeError(f"the daemon did not answer; see {self.data_dir / 'daemon.log'}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def crash(self) -> None:
        """SIGKILL the daemon (by its recorded pid) and reap it."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        #: What the stopped daemon left on the host (the target: nothing).
        self.leaks = find_leaks(self.data_dir)
        shutil.rmtree(self.data_dir, ignore_errors=True)

"""Host-side bait: canary files, loopback listeners and file hashes that attacks must not reach.

The runner plants the bait before a tier's run, gives attacks the host paths (white-box: they
know exactly where to look), and after every attack checks that no canary was read (its secret
never appears in any output) or changed, and that no listener received a connection.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..config import default_images_dir

MARKER = "STOCKADE-CANARY"


def _digest(path: Path) -> str:
    try:
        st = path.stat()
        return f"{hashlib.sha256(path.read_bytes()).hexdigest()}:{st.st_mode:o}:{st.st_mtime_ns}"
    except OSError as exc:
        return f"missing ({exc.strerror})"


def _listing(directory: Path) -> str:
    try:
        return ",".join(sorted(p.name for p in directory.iterdir()))
    except OSError as exc:
        return f"missing ({exc.strerror})"


class _Listener:
    """Counts connections to a socket (TCP on 127.0.0.1, or an abstract unix socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connections = 0
        sock.listen(16)
        sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@dataclass
class Bait:
    """Everything planted on the host for one run; use as a context manager."""

    data_dir: Path
    token: str = field(default_factory=lambda: secrets.token_hex(6))
    secret: str = field(default_factory=lambda: secrets.token_hex(12))
    canaries: list[Path] = field(default_factory=list)
    watched: list[Path] = field(default_factory=list)
    tcp: _Listener | None = None
    abstract: _Listener | None = None
    abstract_name: str = ""

    def __enter__(self) -> "Bait":
        self.canary_dirs = [
            self.data_dir / f"canary-{self.token}",
            Path("/var/tmp") / f"stockade-canary-{self.token}",
        ]
        for i, directory in enumerate(self.canary_dirs):
            directory.mkdir(mode=0o755)
            canary = directory / "secret.txt"
            canary.write_text(f"{MARKER}-{self.secret}-{i}\n")
            canary.chmod(0o644)  # world-readable: only the sandbox boundary stands in the way
            self.canaries.append(canary)
        images = default_images_dir(self.data_dir)
        self.watched = [
            *self.canaries,
            Path(__file__).parents[1] / "agent" / "main.py",
            *sorted(images.glob("*/rootfs*/etc/os-release")),
            *sorted(images.glob("*/rootfs*/usr/bin/true")),
        ]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", 0))
        self.tcp = _Listener(tcp)
        self.abstract_name = f"stockade-bait-{self.token}"
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind("\0" + self.abstract_name)
        self.abstract = _Listener(unix)
        self._baseline = self.snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        for listener in (self.tcp, self.abstract):
            if listener is not None:
                listener.close()
        for directory in self.canary_dirs:
            shutil.rmtree(directory, ignore_errors=True)

    @property
    def secrets(self) -> list[str]:
        """Strings that must never appear in anything a sandbox prints."""
        found = [self.secret]
        for path in (Path("/etc/machine-id"), Path("/etc/shadow")):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            found.append(hashlib.sha256(data).hexdigest())
            if path.name == "machine-id" and data.strip():
                found.append(data.decode().strip())
        return found

    def env(self) -> dict[str, str]:
        """What attacks are told about the host (white-box)."""
        assert self.tcp is not None
        return {
            "STOCKADE_CANARIES": ":".join(str(c) for c in self.canaries),
            "STOCKADE_HOST_DATA_DIR": str(self.data_dir),
            "STOCKADE_HOST_SOCKET": str(self.data_dir / "private" / "stockade.sock"),
            "STOCKADE_HOST_TCP_PORT": str(self.tcp.sock.getsockname()[1]),
            "STOCKADE_HOST_ABSTRACT": self.abstract_name,
        }

    def snapshot(self) -> dict[str, str]:
        state = {str(p): _digest(p) for p in self.watched}
        state.update({f"{d}/ (listing)": _listing(d) for d in self.canary_dirs})
        assert self.tcp is not None and self.abstract is not None
        state["tcp connections"] = str(self.tcp.connections)
        state["abstract connections"] = str(self.abstract.connections)
        return state

    def violations(self) -> list[str]:
        """What changed on the host since the bait was planted."""
        now = self.snapshot()
        return [
            f"{key}: {self._baseline[key]} -> {now[key]}" for key in now if now[key] != self._baseline[key]
        ]

    def leaked(self, *texts: str) -> list[str]:
        """The secrets that appear in ``texts``."""
        return [s[:12] + "..." for s in self.secrets if any(s in t for t in texts)]

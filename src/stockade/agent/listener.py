"""The agent's unix-socket listener, able to let go of its host sockets for a checkpoint.

gVisor cannot save a sandbox that holds a socket bound on the host (``--host-uds=create``), so
before ``runsc checkpoint`` the host calls ``sys.suspend``: the agent answers, closes its
listener and every connection, and writes ``suspended`` in its run directory. It then waits
for the host to write ``resume`` there (after a restore, or after a checkpoint that failed),
and listens again. Processes and their buffered output are untouched throughout.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

from . import protocol as p
from .connection import Stream, serve_socket

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any

    from .connection import Handler

SUSPENDED = "suspended"
RESUME = "resume"
#: Seconds to wait for ``resume`` before listening again anyway (a host that died mid-pause).
RESUME_DEADLINE = 600.0


class Listener:
    """Serve the agent protocol on ``path``; :meth:`suspend` is the ``sys.suspend`` handler."""

    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.run_dir = os.path.dirname(path)
        self.handlers = {**handlers, p.Method.SYS_SUSPEND.value: self.suspend}
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        while True:
            listener = self._bind()
            try:
                self._accept_until_woken(listener)
            finally:
                listener.close()
                _unlink(self.path)
                self._stopped.set()
            self._wait_for_resume()

    def _bind(self) -> socket.socket:
        _unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old)
        listener.listen(16)
        return listener

    def _accept_until_woken(self, listener: socket.socket) -> None:
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                os.read(self._wake_r, 1)
                return
            conn, _ = listener.accept()
            with self._lock:
                self._conns.add(conn)
            try:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
            except RuntimeError:  # no thread to spare (pids limit): refuse this connection only
                self._forget(conn)
                conn.close()
                time.sleep(0.1)

    def _serve(self, conn: socket.socket) -> None:
        try:
            serve_socket(conn, self.handlers)
        finally:
            self._forget(conn)

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _wait_for_resume(self) -> None:
        deadline = time.monotonic() + RESUME_DEADLINE
        while time.monotonic() < deadline:
            if self._conns_closed() and _unlink(os.path.join(self.run_dir, RESUME)):
                break
            time.sleep(0.002)
        _unlink(os.path.join(self.run_dir, SUSPENDED))

    def _conns_closed(self) -> bool:
        with self._lock:
            return not self._conns

    def suspend(self, stream: Stream, params: dict[str, Any]) -> None:
        """sys.suspend: stop listening, answer, hang up everyone, then mark ``suspended``."""
        self._stopped.clear()
        _unlink(os.path.join(self.run_dir, RESUME))
        os.write(self._wake_w, b"x")
        self._stopped.wait()
        stream.end(p.ok(None))
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while not self._conns_closed() and time.monotonic() < deadline:
            time.sleep(0.001)
        with self._lock:
            left = len(self._conns)
        marker = os.path.join(self.run_dir, SUSPENDED)
        with open(marker + ".tmp", "w") as f:
            f.write(f"busy: {left} connection(s) still open" if left else "ok")
        os.rename(marker + ".tmp", marker)  # the host never reads a half-written answer


def _unlink(path: str) -> bool:
    """Remove ``path`` if we may (gVisor refuses for a host-bound socket: the host does it)."""
    try:
        os.unlink(path)
        return True
    except OSError:
        return False

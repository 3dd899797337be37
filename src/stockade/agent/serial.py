"""Serving the host over a virtio-serial port (the microVM tier).

A virtio-serial port carries one byte stream at a time: the host's end is a unix socket that one
client connects to. The port reads EOF while no host is connected and writes would block, so the
agent serves one :class:`~.connection.Connection` per host connection, on the same open port, and
never lets a write outlive the connection it belongs to (a stale half frame would corrupt the next
host's stream): writes are non-blocking and give up once the connection is over.
"""

from __future__ import annotations

import glob
import os
import select
import threading
import time

from .connection import Connection

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from .connection import Handler

#: The port's name, given by the host (``-device virtserialport,name=...``).
PORT_NAME = "org.stockade.agent"


def find_port(name: str = PORT_NAME, wait: float = 30.0) -> str:
    """The /dev node of the virtio-serial port called ``name``."""
    deadline = time.monotonic() + wait
    while True:
        for entry in sorted(glob.glob("/sys/class/virtio-ports/*")):
            try:
                with open(os.path.join(entry, "name")) as f:
                    if f.read().strip() == name:
                        return "/dev/" + os.path.basename(entry)
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise SystemExit(f"stockade-agent: no virtio-serial port named {name}")
        time.sleep(0.02)


class _Session:
    """One host connection over the port: a reader that sees EOF when the host leaves."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.over = False

    def read(self, n: int) -> bytes:
        while True:
            ready = select.poll()
            ready.register(self.fd, select.POLLIN)
            ready.poll()
            try:
                data = os.read(self.fd, n)
            except BlockingIOError:
                continue
            if not data:
                self.over = True
            return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.over:
                raise BrokenPipeError("the host went away")
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                ready = select.poll()
                ready.register(self.fd, select.POLLOUT)
                ready.poll(200)


def _host_connected(fd: int) -> bool:
    ready = select.poll()
    ready.register(fd, select.POLLIN | select.POLLOUT)
    return not any(ev & select.POLLHUP for _, ev in ready.poll(0))


def serve_device(path: str, handlers: dict[str, Handler]) -> None:
    """Serve host connections over the port at ``path`` ('auto': find it by name), forever."""
    if path == "auto":
        path = find_port()
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    send_lock = threading.Lock()
    while True:
        while not _host_connected(fd):
            time.sleep(0.01)
        session = _Session(fd)

        def write(frame: bytes, session: _Session = session) -> None:
            with send_lock:
                session.write(frame)

        Connection(session, write, handlers).serve()  # type: ignore[arg-type]
        session.over = True
        with send_lock:  # no writer of the old connection is mid-frame past this point
            pass

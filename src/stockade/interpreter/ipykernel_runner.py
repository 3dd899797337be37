"""What runs inside the python kernel process: ipykernel, with two fixes and two additions
(chart data for figures, :mod:`.charts`; per-cell environment variables).

The kernelspec written by :mod:`.kernel` runs the entry file again with ``--ipykernel``
(without ``-I``, so the kernel sees the image's ``sys.path`` as any python would); the entry
hands over to :func:`run_ipykernel`, which takes the package's directory off ``sys.path``
before it imports ipykernel, so user code imports nothing of ours by accident.
"""

from __future__ import annotations

import codecs
import os
import sys
from typing import Any

from . import charts

#: The key of an execute request's metadata holding that cell's environment variables.
ENV_KEY = "stockade_env"
#: The directory holding this package, which the entry put first on ``sys.path``.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_ipykernel(argv: list[str]) -> None:
    """Run ipykernel, with fd-level output (subprocesses, ``os.write``) decoded leniently.

    ipykernel 6.17 (Debian 12) decodes captured fd output strictly, so one invalid byte kills
    the capturing thread and all later output of subprocesses is lost; it also copies that
    output to the kernel's original stdout. This replaces the capturing loop with one that
    turns invalid bytes into U+FFFD and copies nothing. The shell gets the chart formatter
    and the per-cell environment hooks before the kernel starts serving.
    """
    if sys.path and sys.path[0] == ROOT:
        del sys.path[0]
    from ipykernel import iostream, kernelapp

    def watch_pipe_fd(self: Any) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            chunk = os.read(self._fid, 1 << 16)
            while chunk and self._should_watch:
                self.write(decoder.decode(chunk))
                chunk = os.read(self._fid, 1 << 16)
        except Exception:  # noqa: BLE001 - as upstream: remembered, raised on close
            self._exc = sys.exc_info()

    if hasattr(iostream.OutStream, "_watch_pipe_fd"):
        iostream.OutStream._watch_pipe_fd = watch_pipe_fd
    if hasattr(iostream.IOPubThread, "_setup_pipe_out"):
        _pipe_over_ipc(iostream, os.path.dirname(os.path.abspath(argv[argv.index("-f") + 1])))
    sys.argv = [sys.argv[0], *argv]
    app = kernelapp.IPKernelApp.instance()
    app.initialize(argv)
    charts.register(app.shell)
    _per_cell_env(app.kernel, app.shell)
    app.start()


def _per_cell_env(kernel: Any, shell: Any) -> None:
    """Give a cell the environment variables its request names (metadata ``stockade_env``),
    for that cell only: afterwards each variable has its earlier value again, or none."""
    saved: dict[str, str | None] = {}

    def before(info: Any) -> None:
        env = (kernel.get_parent("shell") or {}).get("metadata", {}).get(ENV_KEY)
        if isinstance(env, dict):
            for name, value in env.items():
                if isinstance(name, str) and isinstance(value, str):
                    saved.setdefault(name, os.environ.get(name))
                    os.environ[name] = value

    def after(result: Any) -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        saved.clear()

    shell.events.register("pre_run_cell", before)
    shell.events.register("post_run_cell", after)


def _pipe_over_ipc(iostream: Any, directory: str) -> None:
    """Carry forked children's output to the kernel over a unix socket in ``directory``.

    ipykernel listens for it on loopback TCP (``tcp://127.0.0.1:<random>``), and gVisor's
    checkpoint refuses a listening TCP socket ("endpoint still has waiters upon save"), so a
    sandbox with a live kernel could not be paused. Every other kernel socket is ``ipc`` already.
    """
    import zmq

    def setup_pipe_in(self: Any) -> None:
        self._pipe_uuid = os.urandom(16)
        pipe_in = self.socket.context.socket(zmq.PULL)
        pipe_in.linger = 0
        self._pipe_address = f"ipc://{directory}/iopub-pipe-{os.getpid()}"
        pipe_in.bind(self._pipe_address)
        self._pipe_in = iostream.ZMQStream(pipe_in, self.io_loop)
        self._pipe_in.on_recv(self._handle_pipe_msg)

    def setup_pipe_out(self: Any) -> tuple[Any, Any]:
        ctx = zmq.Context()  # a new context after fork, as upstream
        pipe_out = ctx.socket(zmq.PUSH)
        pipe_out.linger = 3000
        pipe_out.connect(self._pipe_address)
        return ctx, pipe_out

    iostream.IOPubThread._setup_pipe_in = setup_pipe_in
    iostream.IOPubThread._setup_pipe_out = setup_pipe_out

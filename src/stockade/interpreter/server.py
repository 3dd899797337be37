"""The server loop: requests on stdin, one execution at a time on the executor, events out.

Requests come as JSON lines on stdin::

    {"op": "execute", "id": "e1", "code": "1+1", "timeout": 30, "env": {"A": "1"}}
    {"op": "interrupt", "id": "e1"}
    {"op": "shutdown"}

Events are those of :mod:`.wire`. Each execution may send at most
:data:`~.wire.MAX_OUTPUT` bytes of output; past that the rest is dropped and the cell is
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from .bash import BashExecutor, SelectPoller
from .ipykernel_runner import run_ipykernel
from .kernel import KernelExecutor
from .wire import CHUNK_CHARS, INTERRUPT_GRACE, MAX_OUTPUT, PROTOCOL, Failure, emit


class Run:
    """The execution in progress: its budget, deadline and how it is ending."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.id = str(request.get("id", ""))
        timeout = request.get("timeout")
        self.deadline = time.monotonic() + float(timeout) if timeout else None
        self.sent = 0
        self.status = "ok"
        self.error_seen = False
        self.interrupted_at: float | None = None
        self.synthetic: dict[str, Any] | None = None

    def send(self, event: dict[str, Any]) -> None:
        if self.status == "output_limit":
            return
        if event["type"] in ("stdout", "stderr"):
            text = event["text"]
            size = len(text.encode("utf-8", "surrogatepass"))
            if self.sent + size > MAX_OUTPUT:
                text = text[: max(0, MAX_OUTPUT - self.sent)]
            for i in range(0, len(text), CHUNK_CHARS):
                emit({"id": self.id, "type": event["type"], "text": text[i : i + CHUNK_CHARS]})
        else:
            size = len(json.dumps(event.get("data", "")))
            if event["type"] == "error":
                self.error_seen = True
            if self.sent + size <= MAX_OUTPUT:
                emit({"id": self.id, **event})
        self.sent += size
        if self.sent > MAX_OUTPUT:
            self.status = "output_limit"
            self.synthetic = {
                "type": "error",
                "name": "OutputLimitExceeded",
                "value": f"the cell's output passed {MAX_OUTPUT} bytes; the rest "
                f"was dropped and the cell interrupted",
                "traceback": "",
            }


class Server:
    """Reads requests, runs them one at a time on the executor, writes events."""

    def __init__(self, executor: KernelExecutor | BashExecutor) -> None:
        self.executor = executor
        self.run: Run | None = None
        self.pending = b""
        self.closing = False
        self.poller = _poller(executor)

    def serve(self) -> None:
        while not (self.closing and self.run is None):
            for source, _ in self.poller.poll(100):
                if source == 0:
                    self.read_requests()
                elif self.run is not None:
                    for event in self.executor.read(source):
                        self.run.send(event)
                else:
                    self.executor.read(source)  # stray output between cells
            if self.run is not None:
                self.check_run()

    def read_requests(self) -> None:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            self.closing = True
            self.poller.unregister(0)
            if self.run is not None:
                self.stop_run("interrupted")
            return
        self.pending += chunk
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            try:
                request = json.loads(line)
            except ValueError:
                continue
            if isinstance(request, dict):
                self.handle(request)

    def handle(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "execute":
            if self.run is not None:
                emit({"id": request.get("id"), "type": "end", "status": "busy", "execution_count": None})
                return
            self.run = Run(request)
            alive, why = self.executor.alive()
            if not alive:
                self.restart_dead()
            env = request.get("env")
            env = {k: v for k, v in env.items() if isinstance(v, str)} if isinstance(env, dict) else {}
            self.executor.execute(str(request.get("code", "")), env)
        elif op == "interrupt" and self.run is not None and request.get("id") == self.run.id:
            self.stop_run("interrupted")
        elif op == "shutdown":
            self.closing = True
            if self.run is not None:
                self.stop_run("interrupted")

    def restart_dead(self) -> None:
        try:
            self.executor.restart()
        except Failure as exc:
            emit({"type": "fatal", "message": str(exc)})
            raise SystemExit(1) from None
        self.poller = _poller(self.executor, stdin=not self.closing)

    def stop_run(self, status: str) -> None:
        assert self.run is not None
        if self.run.interrupted_at is None:
            if self.run.status == "ok":
                self.run.status = status
            self.run.interrupted_at = time.monotonic()
            self.executor.interrupt()

    def check_run(self) -> None:
        run = self.run
        assert run is not None
        if self.executor.done:
            if isinstance(self.executor, BashExecutor) and run.status == "ok":
                for event in self.executor.outcome():
                    run.send(event)
            return self.finish()
        alive, why = self.executor.alive()
        if not alive:
            run.status = "kernel_died"
            run.synthetic = {
                "type": "error",
                "name": "KernelDied",
                "value": why + "; its state is lost and it restarts on the next request",
                "traceback": "",
            }
            return self.finish()
        now = time.monotonic()
        if run.status == "output_limit" and run.interrupted_at is None:
            self.stop_run("output_limit")
        if run.deadline is not None and now > run.deadline:
            self.stop_run("timeout")
        if run.interrupted_at is not None and now > run.interrupted_at + INTERRUPT_GRACE:
            run.synthetic = {
                "type": "error",
                "name": "KernelRestarted",
                "value": f"the cell did not stop within {INTERRUPT_GRACE:g} s of "
                f"an interrupt, so it was restarted; its state is lost",
                "traceback": "",
            }
            self.restart_dead()
            self.finish()

    def finish(self) -> None:
        run = self.run
        assert run is not None
        if run.synthetic is not None:
            emit({"id": run.id, **run.synthetic})
        emit({"id": run.id, "type": "end", "status": run.status, "execution_count": self.executor.count})
        self.run = None


def _poller(executor: KernelExecutor | BashExecutor, stdin: bool = True) -> Any:
    if isinstance(executor, KernelExecutor):
        poller = executor.zmq.Poller()
        flag = executor.zmq.POLLIN
    else:
        poller, flag = SelectPoller(), select.POLLIN
    if stdin:
        poller.register(0, flag)
    for source in executor.sources():
        poller.register(source, flag)
    return poller


def main() -> None:
    """Serve one code context (or, with ``--ipykernel``, be the python kernel)."""
    if sys.argv[1:2] == ["--ipykernel"]:
        return run_ipykernel(sys.argv[2:])
    parser = argparse.ArgumentParser(description="Stockade's interpreter server: one code context.")
    parser.add_argument("--language", default="python")
    args = parser.parse_args()
    language = args.language.lower()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    workdir = tempfile.mkdtemp(prefix="stockade-ctx-")
    executor: KernelExecutor | BashExecutor | None = None
    try:
        try:
            if language == "bash":
                executor = BashExecutor(os.getcwd(), workdir)
            else:
                executor = KernelExecutor(language, os.getcwd(), workdir)
        except Failure as exc:
            emit({"type": "fatal", "message": str(exc)})
            sys.exit(1)
        emit({"type": "ready", "protocol": PROTOCOL, "language": language, "pid": os.getpid()})
        Server(executor).serve()
    finally:
        if executor is not None:
            executor.close()
        shutil.rmtree(workdir, ignore_errors=True)

"""The Jupyter executor: one kernel per context, reached over ZeroMQ unix sockets.

``zmq`` and ``jupyter_client`` are imported when a kernel context starts, not at import time:
a bash context needs neither.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from .ipykernel_runner import ENV_KEY
from .wire import Failure

KERNEL_READY_TIMEOUT = 120.0
#: Terminal colour codes, which kernels put in tracebacks.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: The entry file; the python kernelspec runs it again with ``--ipykernel``.
ENTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")


class KernelExecutor:
    """A Jupyter kernel, reached over ZeroMQ unix sockets in a private directory."""

    def __init__(self, language: str, cwd: str, workdir: str) -> None:
        try:
            import zmq
            from jupyter_client.kernelspec import KernelSpecManager
            from jupyter_client.manager import KernelManager
        except ImportError:
            raise Failure(
                f"this sandbox has no Jupyter kernel stack (jupyter_client) for "
                f"{language!r}; create it from the 'code-interpreter' template"
            ) from None
        self.zmq = zmq
        if language == "python":
            # Our own spec: ipykernel with the fixes of run_ipykernel(), found without the
            # default search (which imports IPython here, a second or so).
            self.specs = KernelSpecManager(kernel_dirs=[_python_spec(workdir)])
            self.kernel_name = "stockade-python"
        else:
            self.specs = KernelSpecManager()
            found = self.specs.get_all_specs()
            names = [n for n, s in sorted(found.items()) if s["spec"].get("language", "").lower() == language]
            if not names:
                raise Failure(
                    f"no Jupyter kernel for language {language!r} in this sandbox "
                    f"(installed: {', '.join(sorted(found)) or 'none'})"
                )
            self.kernel_name = names[0]
        self.cwd = cwd
        self.workdir = workdir
        self.manager_class = KernelManager
        self.stderr_tail = b""
        self.generation = 0
        self.count = 0
        self.msg_id = ""
        self.start()

    def start(self) -> None:
        # A new manager (and ZeroMQ context) per kernel: shutting one down ends its context.
        self.generation += 1
        self.km = self.manager_class(
            kernel_name=self.kernel_name,
            kernel_spec_manager=self.specs,
            transport="ipc",
            connection_file=os.path.join(self.workdir, f"kernel-{self.generation}.json"),
        )
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # a warning at every start
        # The kernel's own stderr (start-up errors, crashes) comes to us through a pipe, of
        # which we keep the tail: a file would grow without bound.
        self.stderr_fd, write_end = os.pipe()
        os.set_blocking(self.stderr_fd, False)
        try:
            self.km.start_kernel(
                cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=write_end
            )
        finally:
            os.close(write_end)
        self.shell = self.km.connect_shell()
        self.iopub = self.km.connect_iopub()
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Send kernel_info until the kernel answers and IOPub is subscribed."""
        deadline = time.monotonic() + KERNEL_READY_TIMEOUT
        poller = self.zmq.Poller()
        poller.register(self.shell, self.zmq.POLLIN)
        poller.register(self.iopub, self.zmq.POLLIN)
        replied = subscribed = False
        while not (replied and subscribed):
            if time.monotonic() > deadline or not self.km.is_alive():
                self.drain_stderr()
                raise Failure(f"the kernel did not start: {self.log_tail()}")
            msg_id = self.km.session.send(self.shell, "kernel_info_request")["header"]["msg_id"]
            round_end = time.monotonic() + 1.0
            while time.monotonic() < round_end and not (replied and subscribed):
                for sock, _ in poller.poll(100):
                    _, msg = self.km.session.recv(sock, mode=self.zmq.NOBLOCK)
                    if msg is None:
                        continue
                    if sock is self.shell and msg["parent_header"].get("msg_id") == msg_id:
                        replied = True
                    elif sock is self.iopub:
                        subscribed = True

    def drain_stderr(self) -> None:
        while True:
            try:
                chunk = os.read(self.stderr_fd, 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self.stderr_tail = (self.stderr_tail + chunk)[-1500:]

    def log_tail(self) -> str:
        return self.stderr_tail.decode("utf-8", "replace").strip() or "(no kernel output)"

    def sources(self) -> list[Any]:
        return [self.shell, self.iopub, self.stderr_fd]

    def execute(self, code: str, env: dict[str, str] | None = None) -> None:
        """Send the cell; ``env`` is set for this cell only (python kernels: see
        ``ipykernel_runner``)."""
        self.done_reply = self.done_idle = False
        self.msg_id = self.km.session.send(
            self.shell,
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                # One request at a time, so no queue to abort after an error: with stop_on_error
                # ipykernel aborted the next request too when it came within its abort window.
                "allow_stdin": False,
                "stop_on_error": False,
            },
            metadata={ENV_KEY: env} if env else None,
        )["header"]["msg_id"]

    def read(self, source: Any) -> list[dict[str, Any]]:
        """Drain ``source``; return events of the current execution."""
        if source == self.stderr_fd:
            self.drain_stderr()
            return []
        events: list[dict[str, Any]] = []
        while True:
            try:
                _, msg = self.km.session.recv(source, mode=self.zmq.NOBLOCK)
            except (ValueError, KeyError) as exc:  # a message we cannot decode: drop it
                events.append({"type": "stderr", "text": f"[stockade: bad kernel message: {exc}]\n"})
                continue
            if msg is None:
                return events
            if msg["parent_header"].get("msg_id") != self.msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if source is self.shell:
                if kind == "execute_reply":
                    self.done_reply = True
                    self.count = content.get("execution_count") or self.count
            elif kind == "stream":
                name = "stderr" if content.get("name") == "stderr" else "stdout"
                events.append({"type": name, "text": content.get("text", "")})
            elif kind in ("execute_result", "display_data"):
                events.append(
                    {
                        "type": "result",
                        "data": content.get("data", {}),
                        "is_main_result": kind == "execute_result",
                    }
                )
            elif kind == "error":
                traceback = "\n".join(str(line) for line in content.get("traceback", []))
                events.append(
                    {
                        "type": "error",
                        "name": content.get("ename", ""),
                        "value": content.get("evalue", ""),
                        "traceback": ANSI.sub("", traceback),
                    }
                )
            elif kind == "status" and content.get("execution_state") == "idle":
                self.done_idle = True

    @property
    def done(self) -> bool:
        return self.done_reply and self.done_idle

    def alive(self) -> tuple[bool, str]:
        if self.km.is_alive():
            return True, ""
        self.drain_stderr()
        process = getattr(self.km.provisioner, "process", None)
        code = process.poll() if process is not None else None
        how = f"exit status {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"
        return False, f"the kernel died ({how}): {self.log_tail()}"

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def restart(self) -> None:
        for sock in (self.shell, self.iopub):
            sock.close(linger=0)
        os.close(self.stderr_fd)
        try:
            self.km.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001 - a dead kernel may fail to shut down; start anew
            pass
        self.start()

    def close(self) -> None:
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)


def _python_spec(workdir: str) -> str:
    """Write the kernelspec of our python kernel; return the directory holding it."""
    kernels = os.path.join(workdir, "kernels")
    os.makedirs(os.path.join(kernels, "stockade-python"))
    spec = {
        "argv": [sys.executable, ENTRY, "--ipykernel", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }
    with open(os.path.join(kernels, "stockade-python", "kernel.json"), "w") as f:
        json.dump(spec, f)
    return kernels

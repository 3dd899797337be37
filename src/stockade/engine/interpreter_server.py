"""Stockade's interpreter server: one code context, run inside a sandbox by the engine.

The engine copies this file into the sandbox and starts it through the agent as an ordinary
long-running process (``python3 server.py --language python``). It drives either a Jupyter kernel
(through ``jupyter_client``, for ``python`` and any language with an installed kernelspec) or a
bash shell (standard library only, so bash contexts work in any image).

Requests come as JSON lines on stdin::

    {"op": "execute", "id": "e1", "code": "1+1", "timeout": 30}
    {"op": "interrupt", "id": "e1"}
    {"op": "shutdown"}

Events go out as JSON lines on stdout: first ``{"type": "ready", ...}`` (or ``{"type": "fatal",
"message"}``), then per execution ``stdout``/``stderr`` (``text``), ``result`` (``data``: MIME
bundle, ``is_main_result``), ``error`` (``name``, ``value``, ``traceback``) and one ``end``
(``status``, ``execution_count``), each with the execution's ``id``.

Each execution may send at most :data:`MAX_OUTPUT` bytes of output; past that the rest is dropped
and the cell is interrupted. Strings are sent as valid UTF-8: undecodable bytes and lone
surrogates become U+FFFD.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

PROTOCOL = 1
MAX_OUTPUT = 16 << 20
#: Largest text of one stream event; longer output is split.
CHUNK_CHARS = 256 << 10
#: Seconds a cell gets to stop after an interrupt before its kernel or shell is restarted.
INTERRUPT_GRACE = 3.0
KERNEL_READY_TIMEOUT = 120.0
#: Terminal colour codes, which kernels put in tracebacks.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clean(value: Any) -> Any:
    """Make every string in ``value`` valid UTF-8 (lone surrogates become U+FFFD)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value


def emit(event: dict[str, Any]) -> None:
    line = json.dumps(clean(event), ensure_ascii=False, separators=(",", ":")) + "\n"
    sys.stdout.buffer.write(line.encode("utf-8"))
    sys.stdout.buffer.flush()


class Failure(Exception):
    """The context cannot start or go on; the message says why."""


# -- executors: one per context --------------------------------------------------------------

class KernelExecutor:
    """A Jupyter kernel, reached over ZeroMQ unix sockets in a private directory."""

    def __init__(self, language: str, cwd: str, workdir: str) -> None:
        try:
            import zmq
            from jupyter_client.kernelspec import KernelSpecManager
            from jupyter_client.manager import KernelManager
        except ImportError:
            raise Failure(f"this sandbox has no Jupyter kernel stack (jupyter_client) for "
                          f"{language!r}; create it from the 'code-interpreter' template") from None
        self.zmq = zmq
        if language == "python":
            # Our own spec: ipykernel with the fixes of run_ipykernel(), found without the
            # default search (which imports IPython here, a second or so).
            self.specs = KernelSpecManager(kernel_dirs=[_python_spec(workdir)])
            self.kernel_name = "stockade-python"
        else:
            self.specs = KernelSpecManager()
            found = self.specs.get_all_specs()
            names = [n for n, s in sorted(found.items())
                     if s["spec"].get("language", "").lower() == language]
            if not names:
                raise Failure(f"no Jupyter kernel for language {language!r} in this sandbox "
                              f"(installed: {', '.join(sorted(found)) or 'none'})")
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
            kernel_name=self.kernel_name, kernel_spec_manager=self.specs, transport="ipc",
            connection_file=os.path.join(self.workdir, f"kernel-{self.generation}.json"))
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # a warning at every start
        # The kernel's own stderr (start-up errors, crashes) comes to us through a pipe, of
        # which we keep the tail: a file would grow without bound.
        self.stderr_fd, write_end = os.pipe()
        os.set_blocking(self.stderr_fd, False)
        try:
            self.km.start_kernel(cwd=self.cwd, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=write_end)
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

    def execute(self, code: str) -> None:
        self.done_reply = self.done_idle = False
        self.msg_id = self.km.session.send(self.shell, "execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})["header"]["msg_id"]

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
                events.append({"type": "stderr",
                               "text": f"[stockade: bad kernel message: {exc}]\n"})
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
                events.append({"type": "result", "data": content.get("data", {}),
                               "is_main_result": kind == "execute_result"})
            elif kind == "error":
                traceback = "\n".join(str(line) for line in content.get("traceback", []))
                events.append({"type": "error", "name": content.get("ename", ""),
                               "value": content.get("evalue", ""),
                               "traceback": ANSI.sub("", traceback)})
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


class BashExecutor:
    """A persistent interactive bash (no job control): cwd, variables and functions persist.

    Each cell is written to a file and sourced by one input line; a marker with a random token
    on stdout and stderr ends it. SIGINT aborts the whole line, as at a prompt.
    """

    def __init__(self, cwd: str, workdir: str) -> None:
        self.cwd = cwd
        self.workdir = workdir
        self.count = 0
        self.start()

    def start(self) -> None:
        self.token = os.urandom(8).hex()
        env = {**os.environ, "PS1": "", "PS2": "", "PROMPT_COMMAND": "", "HISTFILE": "/dev/null"}
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "--noediting", "-i"], cwd=self.cwd, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.out_fd, self.err_fd = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        for fd in (self.out_fd, self.err_fd):
            os.set_blocking(fd, False)
        self._send(
            "set +H +o history\n"
            f"__stockade_end() {{ printf '\\036{self.token}:%s:%s\\036' \"$1\" \"$2\"; "
            f"printf '\\036{self.token}:%s\\036' \"$1\" >&2; }}\n"
            "__stockade_cell() { . \"$1\" </dev/null; __stockade_end \"$2\" \"$?\"; }\n"
            "__stockade_end 0 0\n")
        self.run_id = "0"
        self._reset()
        deadline = time.monotonic() + 10
        poller = _SelectPoller()
        for fd in (self.out_fd, self.err_fd):
            poller.register(fd, select.POLLIN)
        while not self.done:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise Failure("bash did not start")
            for fd, _ in poller.poll(100):
                self.read(fd)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def _reset(self) -> None:
        self.buffers = {self.out_fd: b"", self.err_fd: b""}
        self.decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace")
                         for fd in self.buffers}
        self.finished = {self.out_fd: False, self.err_fd: False}
        self.exit_code = 0

    def sources(self) -> list[Any]:
        return [self.out_fd, self.err_fd]

    def execute(self, code: str) -> None:
        self.count += 1
        self.run_id = str(self.count)
        self._reset()
        path = os.path.join(self.workdir, "cell.sh")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(code if code.endswith("\n") else code + "\n")
        self._send(f"__stockade_cell '{path}' {self.run_id}\n")

    def read(self, fd: Any) -> list[dict[str, Any]]:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            return []
        name = "stdout" if fd == self.out_fd else "stderr"
        data = self.buffers[fd] + chunk
        out = b""
        while data:
            start = data.find(b"\x1e" + self.token.encode() + b":")
            if start < 0:
                keep = _partial_marker(data, b"\x1e" + self.token.encode() + b":")
                out, data = out + data[:len(data) - keep], data[len(data) - keep:]
                break
            end = data.find(b"\x1e", start + 1)
            if end < 0:
                out, data = out + data[:start], data[start:]
                break
            fields = data[start + len(self.token) + 2:end].decode(errors="replace").split(":")
            out, data = out + data[:start], data[end + 1:]
            if fields[0] == self.run_id:
                self.finished[fd] = True
                if len(fields) > 1 and fields[1].isdigit():
                    self.exit_code = int(fields[1])
        self.buffers[fd] = data
        text = self.decoders[fd].decode(out, final=self.finished[fd])
        return [{"type": name, "text": text}] if text else []

    @property
    def done(self) -> bool:
        return self.finished[self.out_fd] and self.finished[self.err_fd]

    def outcome(self) -> list[dict[str, Any]]:
        if self.exit_code == 0:
            return []
        return [{"type": "error", "name": "ExitCode", "value": str(self.exit_code),
                 "traceback": ""}]

    def alive(self) -> tuple[bool, str]:
        code = self.proc.poll()
        if code is None:
            return True, ""
        return False, f"the shell exited (exit status {code})"

    def interrupt(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            return
        time.sleep(0.05)
        self._send(f"__stockade_end {self.run_id} 130\n")

    def restart(self) -> None:
        self.close()
        self.start()

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _python_spec(workdir: str) -> str:
    """Write the kernelspec of our python kernel; return the directory holding it."""
    kernels = os.path.join(workdir, "kernels")
    os.makedirs(os.path.join(kernels, "stockade-python"))
    spec = {"argv": [sys.executable, os.path.abspath(__file__), "--ipykernel", "-f",
                     "{connection_file}"],
            "display_name": "Python 3", "language": "python", "interrupt_mode": "signal",
            "metadata": {"debugger": False}}
    with open(os.path.join(kernels, "stockade-python", "kernel.json"), "w") as f:
        json.dump(spec, f)
    return kernels


def run_ipykernel(argv: list[str]) -> None:
    """Run ipykernel, with fd-level output (subprocesses, ``os.write``) decoded leniently.

    ipykernel 6.17 (Debian 12) decodes captured fd output strictly, so one invalid byte kills
    the capturing thread and all later output of subprocesses is lost; it also copies that
    output to the kernel's original stdout. This replaces the capturing loop with one that
    turns invalid bytes into U+FFFD and copies nothing.
    """
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
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
    kernelapp.launch_new_instance()


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


def _partial_marker(data: bytes, marker: bytes) -> int:
    """How many trailing bytes of ``data`` could begin ``marker``."""
    for n in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-n:]):
            return n
    return 0


# -- one execution at a time -----------------------------------------------------------------

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
                text = text[:max(0, MAX_OUTPUT - self.sent)]
            for i in range(0, len(text), CHUNK_CHARS):
                emit({"id": self.id, "type": event["type"], "text": text[i:i + CHUNK_CHARS]})
        else:
            size = len(json.dumps(event.get("data", "")))
            if event["type"] == "error":
                self.error_seen = True
            if self.sent + size <= MAX_OUTPUT:
                emit({"id": self.id, **event})
        self.sent += size
        if self.sent > MAX_OUTPUT:
            self.status = "output_limit"
            self.synthetic = {"type": "error", "name": "OutputLimitExceeded",
                              "value": f"the cell's output passed {MAX_OUTPUT} bytes; the rest "
                                       f"was dropped and the cell interrupted", "traceback": ""}


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
                emit({"id": request.get("id"), "type": "end", "status": "busy",
                      "execution_count": None})
                return
            self.run = Run(request)
            alive, why = self.executor.alive()
            if not alive:
                self.restart_dead()
            self.executor.execute(str(request.get("code", "")))
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
            run.synthetic = {"type": "error", "name": "KernelDied", "value": why +
                             "; its state is lost and it restarts on the next request",
                             "traceback": ""}
            return self.finish()
        now = time.monotonic()
        if run.status == "output_limit" and run.interrupted_at is None:
            self.stop_run("output_limit")
        if run.deadline is not None and now > run.deadline:
            self.stop_run("timeout")
        if run.interrupted_at is not None and now > run.interrupted_at + INTERRUPT_GRACE:
            run.synthetic = {"type": "error", "name": "KernelRestarted",
                             "value": f"the cell did not stop within {INTERRUPT_GRACE:g} s of "
                                      f"an interrupt, so it was restarted; its state is lost",
                             "traceback": ""}
            self.restart_dead()
            self.finish()

    def finish(self) -> None:
        run = self.run
        assert run is not None
        if run.synthetic is not None:
            emit({"id": run.id, **run.synthetic})
        emit({"id": run.id, "type": "end", "status": run.status,
              "execution_count": self.executor.count})
        self.run = None


def _poller(executor: KernelExecutor | BashExecutor, stdin: bool = True) -> Any:
    if isinstance(executor, KernelExecutor):
        poller = executor.zmq.Poller()
        flag = executor.zmq.POLLIN
    else:
        poller, flag = _SelectPoller(), select.POLLIN
    if stdin:
        poller.register(0, flag)
    for source in executor.sources():
        poller.register(source, flag)
    return poller


class _SelectPoller:
    """``select.poll`` with zmq.Poller's interface (timeout in ms, (source, event) pairs)."""

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int, flag: int) -> None:
        self._poll.register(fd, flag)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        return self._poll.poll(timeout)


def main() -> None:
    if sys.argv[1:2] == ["--ipykernel"]:
        return run_ipykernel(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    main()

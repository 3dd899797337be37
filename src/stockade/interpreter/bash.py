"""The bash executor: one persistent shell per context, standard library only."""

from __future__ import annotations

import codecs
import os
import re
import select
import shlex
import signal
import subprocess
import time
from typing import Any

from .wire import Failure

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BashExecutor:
    """A persistent interactive bash (no job control): cwd, variables and functions persist.

    Each cell is written to a file and sourced by one input line; a marker with a random token
    on stdout and stderr ends it. SIGINT aborts the whole line, as at a prompt.
    """

    def __init__(self, cwd: str, workdir: str) -> None:
        self.cwd = cwd
        self.workdir = workdir
        self.count = 0
        self.restore = ""
        self.start()

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        """Start the interpreter process in a session of its own, its output read without
        blocking."""
        self.proc = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.out_fd, self.err_fd = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        for fd in (self.out_fd, self.err_fd):
            os.set_blocking(fd, False)

    def start(self) -> None:
        self.token = os.urandom(8).hex()
        env = {**os.environ, "PS1": "", "PS2": "", "PROMPT_COMMAND": "", "HISTFILE": "/dev/null"}
        self._spawn(["bash", "--norc", "--noprofile", "--noediting", "-i"], env)
        self._send(
            "set +H +o history\n"
            f'__stockade_end() {{ printf \'\\036{self.token}:%s:%s\\036\' "$1" "$2"; '
            f"printf '\\036{self.token}:%s\\036' \"$1\" >&2; }}\n"
            "__stockade_cell() { local __stockade_id=$2 __stockade_undo=$3; "
            '[ -z "$4" ] || . "$4"; . "$1" </dev/null; local __stockade_rc=$?; '
            '[ -z "$__stockade_undo" ] || . "$__stockade_undo"; '
            '__stockade_end "$__stockade_id" "$__stockade_rc"; }\n'
            "__stockade_end 0 0\n"
        )
        self.run_id = "0"
        self._reset()
        self._await_ready("bash", 10)

    def _await_ready(self, what: str, seconds: float) -> None:
        """Wait for the end marker of run ``0``; Failure (with what it said on stderr) if none."""
        deadline = time.monotonic() + seconds
        poller = SelectPoller()
        for fd in (self.out_fd, self.err_fd):
            poller.register(fd, select.POLLIN)
        said = ""
        while not self.done:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                said += "".join(e["text"] for e in self.read(self.err_fd) if e["type"] == "stderr")
                raise Failure(f"{what} did not start" + (f": {said.strip()[-500:]}" if said.strip() else ""))
            for fd, _ in poller.poll(100):
                said += "".join(e["text"] for e in self.read(fd) if e["type"] == "stderr")

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def _reset(self) -> None:
        self.buffers = {self.out_fd: b"", self.err_fd: b""}
        self.decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in self.buffers}
        self.finished = {self.out_fd: False, self.err_fd: False}
        self.exit_code = 0
        self.marker: list[str] = []

    def sources(self) -> list[Any]:
        return [self.out_fd, self.err_fd]

    def execute(self, code: str, env: dict[str, str] | None = None) -> None:
        """Source the cell; ``env`` is exported for this cell only: a script run after it
        (or after an interrupt) gives each variable its earlier value again, or unsets it."""
        self.count += 1
        self.run_id = str(self.count)
        self._reset()
        path = os.path.join(self.workdir, "cell.sh")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(code if code.endswith("\n") else code + "\n")
        prelude, self.restore = _env_scripts(env or {})
        setup = restore = ""
        if prelude:  # separate files, so that the cell's line numbers stay its own
            setup, restore = (os.path.join(self.workdir, name) for name in ("env.sh", "restore.sh"))
            for name, text in ((setup, prelude), (restore, self.restore)):
                with open(name, "w", encoding="utf-8") as f:
                    f.write(text)
        self._send(f"__stockade_cell '{path}' {self.run_id} '{restore}' '{setup}'\n")

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
                out, data = out + data[: len(data) - keep], data[len(data) - keep :]
                break
            end = data.find(b"\x1e", start + 1)
            if end < 0:
                out, data = out + data[:start], data[start:]
                break
            fields = data[start + len(self.token) + 2 : end].decode(errors="replace").split(":")
            out, data = out + data[:start], data[end + 1 :]
            if fields[0] == self.run_id:
                self.finished[fd] = True
                if fd == self.out_fd:
                    self.marker = fields
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
        return [{"type": "error", "name": "ExitCode", "value": str(self.exit_code), "traceback": ""}]

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
        if self.restore:  # the aborted line skipped it
            self._send(f". '{os.path.join(self.workdir, 'restore.sh')}'\n")
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


def _env_scripts(env: dict[str, str]) -> tuple[str, str]:
    """Shell lines that export ``env`` and lines that undo it, only if the first ran (an
    interrupt may come before them, or after the undo). Names are checked; values quoted."""
    if not env:
        return "", ""
    prelude, restore = [], []
    names = sorted(name for name in env if ENV_NAME.fullmatch(name))
    for number, (name, value) in enumerate((name, env[name]) for name in names):
        kept = f"__stockade_env{number}"
        prelude.append(f"{kept}=${{{name}+set}}; {kept}v=${{{name}-}}; export {name}={shlex.quote(value)}")
        restore.append(
            f'  if [ -n "${kept}" ]; then {name}=${kept}v; else unset {name}; fi; unset {kept} {kept}v'
        )
    prelude.append("__stockade_envset=1")
    restore = ['if [ -n "${__stockade_envset-}" ]; then', *restore, "  unset __stockade_envset", "fi"]
    return "".join(line + "\n" for line in prelude), "".join(line + "\n" for line in restore)


def _partial_marker(data: bytes, marker: bytes) -> int:
    """How many trailing bytes of ``data`` could begin ``marker``."""
    for n in range(min(len(marker) - 1, len(data)), 0, -1):
        if marker.startswith(data[-n:]):
            return n
    return 0


class SelectPoller:
    """``select.poll`` with zmq.Poller's interface (timeout in ms, (source, event) pairs)."""

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int, flag: int) -> None:
        self._poll.register(fd, flag)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        return self._poll.poll(timeout)

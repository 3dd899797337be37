"""Processes inside the sandbox: start, observe, feed, signal, reap (agent side)."""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import queue
import select
import signal
import struct
import subprocess
import termios
import threading

from . import limits
from . import protocol as p
from .connection import AgentError, Stream
from .credentials import switched

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any

SIGNALS = {
    "TERM": signal.SIGTERM,
    "KILL": signal.SIGKILL,
    "INT": signal.SIGINT,
    "HUP": signal.SIGHUP,
    "QUIT": signal.SIGQUIT,
    "USR1": signal.SIGUSR1,
    "USR2": signal.SIGUSR2,
    "STOP": signal.SIGSTOP,
    "CONT": signal.SIGCONT,
}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
THREAD_LIMIT_MESSAGE = (
    "the agent cannot start a thread: the sandbox has reached its process "
    "limit (pids); the command was killed"
)


def resolve_user(name: Any) -> pwd.struct_passwd:
    """Return the passwd entry of ``name`` (default ``user``; falls back to root if absent)."""
    if name is None:
        try:
            return pwd.getpwnam("user")
        except KeyError:
            return pwd.getpwuid(0)
    if not isinstance(name, str) or not name:
        raise AgentError(p.ErrorCode.BAD_REQUEST, "'user' must be a non-empty user name")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise AgentError(p.ErrorCode.NOT_FOUND, f"no user {name!r} in this sandbox") from None


class Process:
    """One started process, the streams watching it, and its outcome once it ends."""

    def __init__(
        self, popen: subprocess.Popen[bytes], tag: str | None, cmd: str, pty_fd: int | None, max_output: int
    ) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.tag = tag
        self.cmd = cmd
        self.pty_fd = pty_fd
        self.max_output = max_output
        self.output = 0
        self.status = "running"
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.subscribers: list[Stream] = []
        self.lock = threading.Lock()
        self.open_pipes = 0
        self.reaped = False
        self.timer: threading.Timer | None = None
        #: OOM kills in the commands' cgroup before it started (a microVM guest's, limits.py).
        self.oom_before = limits.oom_kills()

    def info(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "tag": self.tag,
            "cmd": self.cmd,
            "status": self.status,
            "pty": self.pty_fd is not None,
        }

    def outcome(self) -> dict[str, Any]:
        found = {"pid": self.pid, "exit_code": self.exit_code, "signal": self.signal, "status": self.status}
        if limits.active():  # only where the agent's own cgroup can tell (a microVM guest)
            found["oom_killed"] = self.signal == signal.SIGKILL and limits.oom_kills() > self.oom_before
        return found

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def subscribe(self, stream: Stream) -> bool:
        """Attach ``stream``; return False if the process already finished."""
        with self.lock:
            if self.finished:
                return False
            self.subscribers.append(stream)
            return True

    def unsubscribe(self, stream: Stream) -> None:
        with self.lock:
            if stream in self.subscribers:
                self.subscribers.remove(stream)

    @property
    def finished(self) -> bool:
        return self.reaped and self.open_pipes == 0

    def publish(self, channel: p.Channel, data: bytes) -> bool:
        """Forward output; False once over the output limit (the caller stops reading)."""
        self.output += len(data)
        if self.output > self.max_output:
            # The leader may have exited while its children still write: kill the group anyway.
            if self.status in ("running", "exited", "signaled"):
                self.status = "output_limit"
            self.kill()
            return False
        with self.lock:
            subscribers = list(self.subscribers)
        for stream in subscribers:
            if not stream.send_data(channel, data):
                self.unsubscribe(stream)
        return True

    def pipe_closed(self) -> None:
        with self.lock:
            self.open_pipes -= 1
        self._maybe_finish()

    def exited(self, status: int) -> None:
        if os.WIFSIGNALED(status):
            self.signal = os.WTERMSIG(status)
            self.exit_code = 128 + self.signal
            if self.status == "running":
                self.status = "signaled"
        else:
            self.exit_code = os.WEXITSTATUS(status)
            if self.status == "running":
                self.status = "exited"
        self.popen.returncode = self.exit_code
        with self.lock:
            self.reaped = True
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        with self.lock:
            if not self.finished:
                return
            subscribers, self.subscribers = self.subscribers, []
        # Only now: children that outlive the leader and hold its pipes are still timed.
        if self.timer:
            self.timer.cancel()
        if self.pty_fd is not None:
            os.close(self.pty_fd)
            self.pty_fd = None
        for stream in subscribers:
            stream.inbox.put(("exited", self.outcome()))
        TABLE.remove(self)


class ProcessTable:
    """Every process the agent started, and the reaper that collects every child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_pid: dict[int, Process] = {}
        self.children = threading.Condition(self.lock)

    def add(self, proc: Process) -> None:
        with self.lock:
            if proc.tag is not None and any(x.tag == proc.tag for x in self.by_pid.values()):
                raise AgentError(
                    p.ErrorCode.ALREADY_EXISTS, f"a running process already has tag {proc.tag!r}"
                )
            self.by_pid[proc.pid] = proc
            self.children.notify_all()

    def remove(self, proc: Process) -> None:
        with self.lock:
            self.by_pid.pop(proc.pid, None)

    def find(self, params: dict[str, Any]) -> Process:
        pid, tag = params.get("pid"), params.get("tag")
        with self.lock:
            if isinstance(pid, int) and pid in self.by_pid:
                return self.by_pid[pid]
            if isinstance(tag, str):
                for proc in self.by_pid.values():
                    if proc.tag == tag:
                        return proc
        what = f"pid {pid}" if pid is not None else f"tag {tag!r}"
        raise AgentError(p.ErrorCode.NOT_FOUND, f"no running process with {what}")

    def list(self) -> list[dict[str, Any]]:
        with self.lock:
            return [proc.info() for proc in self.by_pid.values()]

    def reap_forever(self) -> None:
        """Collect every child (we may be PID 1, so orphans come to us too)."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                with self.lock:
                    self.children.wait(1.0)
                continue
            except InterruptedError:
                continue
            # A child can exit before its spawner has registered it: spawning holds
            # SPAWN_LOCK until the process is in the table, so wait for that lock here.
            with SPAWN_LOCK, self.lock:
                proc = self.by_pid.get(pid)
            if proc is not None:
                proc.exited(status)


TABLE = ProcessTable()
SPAWN_LOCK = threading.Lock()


def _pump(proc: Process, fd: int, channel: p.Channel) -> None:
    """Copy one pipe (or the PTY) to the process's subscribers until EOF."""
    try:
        while True:
            if channel is p.Channel.PTY and not _readable_until_reaped(proc, fd):
                break  # the process is gone and its terminal is drained
            try:
                chunk = os.read(fd, p.CHUNK)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                break  # EIO: the PTY's last writer is gone
            if not chunk or not proc.publish(channel, chunk):
                break  # EOF, or over the output limit: closing our end stops the writers
    finally:
        if channel is not p.Channel.PTY:
            os.close(fd)
        proc.pipe_closed()


def _readable_until_reaped(proc: Process, fd: int) -> bool:
    """Wait for PTY output; False once the process is reaped and nothing is left to read.

    Linux reports EIO on the master when the last slave closes, but gVisor never does, so a
    PTY pump also stops when the process has been reaped and the terminal stays quiet.
    """
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            return True
        if proc.reaped:
            return False


def _environment(user: pwd.struct_passwd, extra: Any, pty: bool) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "SHELL": user.pw_shell or "/bin/sh",
        "LANG": "C.UTF-8",
    }
    if pty:
        env["TERM"] = "xterm-256color"
    if extra is not None:
        if not isinstance(extra, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise AgentError(p.ErrorCode.BAD_REQUEST, "'env' must map strings to strings")
        env.update(extra)
    return env


def _argv(params: dict[str, Any]) -> tuple[list[str], str]:
    argv, cmd = params.get("argv"), params.get("cmd")
    if argv is not None:
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise AgentError(p.ErrorCode.BAD_REQUEST, "'argv' must be a non-empty list of strings")
        return argv, " ".join(argv)
    if not isinstance(cmd, str) or not cmd:
        raise AgentError(p.ErrorCode.BAD_REQUEST, "give 'cmd' (a shell string) or 'argv'")
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    return [shell, "-c", cmd], cmd


def _set_controlling_tty() -> None:
    limits.join()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _resize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _spawn(params: dict[str, Any]) -> tuple[Process, list[tuple[int, p.Channel]]]:
    argv, cmd = _argv(params)
    user = resolve_user(params.get("user"))
    pty = params.get("pty")
    env = _environment(user, params.get("env"), pty is not None)
    cwd = params.get("cwd") or user.pw_dir
    if not isinstance(cwd, str):
        raise AgentError(p.ErrorCode.BAD_REQUEST, "'cwd' must be a path")
    if not os.path.isdir(cwd):
        raise AgentError(p.ErrorCode.NOT_FOUND, f"working directory {cwd!r} does not exist")
    tag = params.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise AgentError(p.ErrorCode.BAD_REQUEST, "'tag' must be a string")
    max_output = int(params.get("max_output") or p.DEFAULT_MAX_OUTPUT)
    common: dict[str, Any] = dict(env=env, cwd=cwd, close_fds=True)
    # Spawn from this thread with the user's identity (credentials.py) rather than Popen's
    # user=/group=, which would force fork() instead of the much cheaper vfork().
    with switched(user.pw_uid, user.pw_gid):
        return _popen(argv, cmd, tag, pty, params, common, max_output)


def _popen(
    argv: list[str],
    cmd: str,
    tag: str | None,
    pty: Any,
    params: dict[str, Any],
    common: dict[str, Any],
    max_output: int,
) -> tuple[Process, list[tuple[int, p.Channel]]]:
    if pty is not None:
        master, slave = os.openpty()
        _resize(master, int(pty.get("cols", 80)), int(pty.get("rows", 24)))
        popen = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=_set_controlling_tty,
            **common,
        )
        os.close(slave)
        proc = Process(popen, tag, cmd, master, max_output)
        proc.open_pipes = 1
        pumps = [(master, p.Channel.PTY)]
    else:
        stdin = subprocess.PIPE if params.get("stdin") else subprocess.DEVNULL
        # In a microVM guest the child joins the commands' cgroup before it execs (limits.py):
        # fork() rather than vfork(), but nothing it starts can escape the cgroup's limits.
        popen = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=limits.join if limits.active() else None,
            **common,
        )
        proc = Process(popen, tag, cmd, None, max_output)
        proc.open_pipes = 2
        assert popen.stdout is not None and popen.stderr is not None
        pumps = [
            (os.dup(popen.stdout.fileno()), p.Channel.STDOUT),
            (os.dup(popen.stderr.fileno()), p.Channel.STDERR),
        ]
        popen.stdout.close()
        popen.stderr.close()
    return proc, pumps


def start(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """process.start: run a command and stream its output until it ends."""
    with SPAWN_LOCK:
        proc, pumps = _spawn(params)
        try:
            TABLE.add(proc)
        except AgentError:
            proc.kill()
            raise
    proc.subscribers.append(stream)
    timeout = params.get("timeout")
    started = 0
    try:
        if timeout:
            proc.timer = threading.Timer(float(timeout), _expire, args=(proc,))
            proc.timer.daemon = True
            proc.timer.start()
        stream.send_event({"type": "start", "pid": proc.pid, "tag": proc.tag})
        for fd, channel in pumps:
            threading.Thread(target=_pump, args=(proc, fd, channel), daemon=True).start()
            started += 1
    except RuntimeError:  # "can't start new thread": the command took every pid we may use
        proc.kill()
        for fd, _ in pumps[started:]:
            os.close(fd)
            proc.pipe_closed()
        raise AgentError(p.ErrorCode.INTERNAL, THREAD_LIMIT_MESSAGE) from None
    return _follow(stream, proc, params.get("keepalive", p.KEEPALIVE_SECONDS))


def _expire(proc: Process) -> None:
    if not proc.finished:  # the leader may be gone while its process group still runs
        if proc.status in ("running", "exited", "signaled"):
            proc.status = "timeout"
        proc.kill()


def connect(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """process.connect: follow a running process's output from now on."""
    proc = TABLE.find(params)
    if not proc.subscribe(stream):
        raise AgentError(p.ErrorCode.NOT_FOUND, f"process {proc.pid} has already ended")
    stream.send_event({"type": "start", "pid": proc.pid, "tag": proc.tag})
    return _follow(stream, proc, params.get("keepalive", p.KEEPALIVE_SECONDS))


def _follow(stream: Stream, proc: Process, keepalive: float) -> dict[str, Any]:
    """Serve a process stream: host input in, until the process ends or the host cancels."""
    while True:
        try:
            kind, value = stream.inbox.get(timeout=keepalive)
        except queue.Empty:
            stream.send_event({"type": "keepalive"})
            continue
        if kind == "exited":
            outcome: dict[str, Any] = value
            return outcome
        if kind == "cancel":
            proc.unsubscribe(stream)
            raise AgentError(p.ErrorCode.CANCELLED, "stream cancelled; the process goes on")
        if kind == "data":
            _write_input(proc, value)
            stream.consumed(len(value))
        elif kind == "close":
            _close_input(proc)


def _write_input(proc: Process, data: bytes) -> None:
    if proc.pty_fd is not None:
        os.write(proc.pty_fd, data)
    elif proc.popen.stdin is not None and not proc.popen.stdin.closed:
        try:
            proc.popen.stdin.write(data)
            proc.popen.stdin.flush()
        except BrokenPipeError:
            pass
    else:
        raise AgentError(p.ErrorCode.BAD_REQUEST, f"process {proc.pid} was not started with stdin open")


def _close_input(proc: Process) -> None:
    if proc.pty_fd is not None:
        os.write(proc.pty_fd, b"\x04")
    elif proc.popen.stdin is not None and not proc.popen.stdin.closed:
        try:
            proc.popen.stdin.close()
        except BrokenPipeError:
            pass


def send_input(stream: Stream, params: dict[str, Any]) -> None:
    """process.input: write the DATA frames of this stream to the process, until CLOSE."""
    proc = TABLE.find(params)
    while True:
        try:
            kind, value = stream.inbox.get(timeout=60)
        except queue.Empty:
            raise AgentError(p.ErrorCode.CANCELLED, "no input for 60 s; stream closed") from None
        if kind == "data":
            _write_input(proc, value)
            stream.consumed(len(value))
        else:
            return


def close_stdin(stream: Stream, params: dict[str, Any]) -> None:
    """process.close_stdin: close the process's standard input."""
    _close_input(TABLE.find(params))


def send_signal(stream: Stream, params: dict[str, Any]) -> None:
    """process.signal: signal the process's whole process group."""
    proc = TABLE.find(params)
    name = str(params.get("signal", "KILL")).upper().removeprefix("SIG")
    if name not in SIGNALS:
        raise AgentError(p.ErrorCode.BAD_REQUEST, f"unknown signal {name!r}; use one of {', '.join(SIGNALS)}")
    if SIGNALS[name] == signal.SIGKILL and proc.status == "running":
        proc.status = "killed"
    proc.kill(SIGNALS[name])


def resize(stream: Stream, params: dict[str, Any]) -> None:
    """process.resize: change a PTY's size."""
    proc = TABLE.find(params)
    if proc.pty_fd is None:
        raise AgentError(p.ErrorCode.BAD_REQUEST, f"process {proc.pid} has no PTY")
    _resize(proc.pty_fd, int(params["cols"]), int(params["rows"]))


def list_processes(stream: Stream, params: dict[str, Any]) -> list[dict[str, Any]]:
    """process.list: the running processes the agent started."""
    return TABLE.list()


#: A process group with fewer members than this is not taken for a fork bomb.
BOMB_MEMBERS = 16


def relieve_pids() -> bool:
    """The sandbox is at its pids limit: SIGKILL the process group started through the agent
    that has the most processes (a fork bomb), if it has at least :data:`BOMB_MEMBERS`;
    whether one was killed. Its end then says ``signal`` 9."""
    with TABLE.lock:
        ours = {proc.pid: proc for proc in TABLE.by_pid.values()}
    counts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                group = int(f.read().rsplit(b")", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):
            continue
        if group in ours:
            counts[group] = counts.get(group, 0) + 1
    if not counts:
        return False
    group = max(counts, key=lambda g: counts[g])
    if counts[group] < BOMB_MEMBERS:
        return False
    ours[group].kill()
    return True


def start_reaper() -> None:
    threading.Thread(target=TABLE.reap_forever, daemon=True, name="reaper").start()


HANDLERS = {
    p.Method.PROCESS_START.value: start,
    p.Method.PROCESS_CONNECT.value: connect,
    p.Method.PROCESS_LIST.value: list_processes,
    p.Method.PROCESS_INPUT.value: send_input,
    p.Method.PROCESS_CLOSE_STDIN.value: close_stdin,
    p.Method.PROCESS_SIGNAL.value: send_signal,
    p.Method.PROCESS_RESIZE.value: resize,
}

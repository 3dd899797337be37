"""Interactive terminals: the SDK's ``sb.pty`` over WebSocket on the local daemon, and
``stockade sandbox shell`` driven through a real pseudo-terminal (the remote server's PTY and
its keys are tested in test_ports.py, next to the other WebSocket routes)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import termios
import threading
import time
from typing import Callable

import pytest
from server_harness import STOCKADE

from stockade import Sandbox
from stockade.sdk.exceptions import SandboxNotFound

pytestmark = pytest.mark.root


class Screen:
    """What a terminal printed so far, and a way to wait for text."""

    def __init__(self) -> None:
        self.data = b""
        self.changed = threading.Condition()

    def __call__(self, data: bytes) -> None:
        with self.changed:
            self.data += data
            self.changed.notify_all()

    def wait_for(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while text not in self.data:
                left = deadline - time.monotonic()
                assert left > 0, f"{text!r} never appeared; the terminal showed {self.data[-500:]!r}"
                self.changed.wait(left)


@pytest.mark.parametrize("isolation", ["container", "gvisor"])
def test_bash_in_a_pty(make_sandbox: Callable[..., Sandbox], isolation: str) -> None:
    sb = make_sandbox(isolation=isolation)
    screen = Screen()
    term = sb.pty.create(80, 24, on_data=screen, cmd="bash --norc")
    assert term.pid > 0
    term.send_input("echo h''i; tty\n")  # the quotes keep the echoed command line from matching
    screen.wait_for(b"hi\r\n")
    screen.wait_for(b"/dev/pts/")
    term.resize(100, 40)
    term.send_input("stty size\n")
    screen.wait_for(b"40 100")
    term.send_input("exit 3\n")
    result = term.wait()
    assert (result.exit_code, result.status) == (3, "exited")
    assert not term.kill()


def test_default_shell_ctrl_c_and_kill(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox()
    screen = Screen()
    term = sb.pty.create(on_data=screen)  # a login shell as 'user'
    term.send_input("sleep 300; echo after-sl''eep\n")
    time.sleep(0.5)
    term.send_input("\x03")  # Ctrl-C stops the sleep, not the shell
    term.send_input("id -un\n")
    screen.wait_for(b"user\r\n")
    assert b"after-sleep" not in screen.data
    assert term.kill()
    assert term.wait().exit_code == 137


def test_closing_the_terminal_kills_its_processes(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox()
    term = sb.pty.create(cmd="sleep 600")
    assert any(p.pid == term.pid for p in sb.commands.list())
    term.disconnect()
    deadline = time.monotonic() + 10
    while any(p.pid == term.pid for p in sb.commands.list()):
        assert time.monotonic() < deadline, "the terminal's process outlived its WebSocket"
        time.sleep(0.1)


def test_pty_on_a_killed_sandbox(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox()
    stale = Sandbox.connect(sb.id)
    sb.kill()
    with pytest.raises(SandboxNotFound):
        stale.pty.create()
    stale.close()


def test_cli_shell_in_a_real_terminal(make_sandbox: Callable[..., Sandbox], daemon: object) -> None:
    sb = make_sandbox()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, with the pseudo-terminal as its terminal
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
        os.execve(STOCKADE, [STOCKADE, "sandbox", "shell", sb.id, "--cmd", "bash --norc"], dict(os.environ))
    try:
        out = b""

        def read_until(text: bytes, timeout: float = 30) -> None:
            nonlocal out
            deadline = time.monotonic() + timeout
            while text not in out:
                assert time.monotonic() < deadline, f"{text!r} never appeared in {out[-500:]!r}"
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    try:
                        out += os.read(fd, 4096)
                    except OSError:
                        return

        read_until(b"$ ")
        os.write(fd, b"echo from-the-cl''i\r")
        read_until(b"from-the-cli\r\n")
        os.write(fd, b"stty size\r")
        read_until(b"30 90\r\n")
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))  # SIGWINCH
        time.sleep(0.5)
        os.write(fd, b"stty size\r")
        read_until(b"50 120\r\n")
        os.write(fd, b"exit 4\r")
        read_until(b"exit")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 4
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

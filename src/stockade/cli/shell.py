"""``stockade sandbox shell ID``: an interactive terminal in a sandbox, in the user's terminal.

The local terminal goes to raw mode (restored on exit), keystrokes go to the sandbox as they
are typed, and a resize of the local window (SIGWINCH) resizes the remote terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty
from typing import Iterator

from ..sdk.pty import AsyncPtyHandle
from ..sdk.sandbox import AsyncSandbox


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put the terminal on ``fd`` in raw mode, if it is one, until the block ends."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _terminal_size(fd: int) -> os.terminal_size:
    """The size of the terminal on ``fd`` itself (``$COLUMNS``/``$LINES`` go stale on resize)."""
    try:
        return os.get_terminal_size(fd)
    except OSError:
        return shutil.get_terminal_size()


async def run_shell(sandbox_id: str, cmd: str | None = None, user: str | None = None) -> int:
    """Connect the current terminal to a new terminal in the sandbox; its exit code."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sb = await AsyncSandbox.connect(sandbox_id)
    loop = asyncio.get_running_loop()
    try:
        size = _terminal_size(stdin)
        handle = await sb.pty.create(
            size.columns, size.lines, cmd=cmd, user=user, on_data=lambda data: _write_all(stdout, data)
        )
        keys: asyncio.Queue[bytes] = asyncio.Queue()

        def on_key() -> None:
            data = os.read(stdin, 4096)
            keys.put_nowait(data)
            if not data:
                loop.remove_reader(stdin)

        def on_resize() -> None:
            size = _terminal_size(stdin)
            loop.create_task(handle.resize(size.columns, size.lines))

        with raw_terminal(stdin):
            loop.add_reader(stdin, on_key)
            loop.add_signal_handler(signal.SIGWINCH, on_resize)
            forward = loop.create_task(_forward(keys, handle))
            try:
                result = await handle.wait()
            finally:
                forward.cancel()
                loop.remove_reader(stdin)
                loop.remove_signal_handler(signal.SIGWINCH)
        code: int = result.exit_code
        return code
    finally:
        await sb.close()


async def _forward(keys: "asyncio.Queue[bytes]", handle: AsyncPtyHandle) -> None:
    while data := await keys.get():
        await handle.send_input(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]

"""Child processes started by ``host.spawn`` (the runtimes' ``runc run``/``delete``, host and
network commands): on the server's loop (uvloop) and on the default loop alike, output of any
size comes back whole, input goes in, failures say what the command printed, and a child that
overstays its timeout or whose caller is cancelled is killed and reaped, with no descriptor or
zombie left behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Awaitable, Callable

import pytest
import uvloop

from stockade import host
from stockade.host.spawn import run_child
from stockade.net.host import NetError
from stockade.net.host import run as net_run

LOOPS = {"default": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def on(loop: str, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def gone(pid: int) -> bool:
    """Neither running nor a zombie: reaped."""
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("loop", LOOPS)
def test_output_input_and_exit_codes(loop: str) -> None:
    async def scenario() -> None:
        before = open_fds()
        # 1 MiB on stdout and some stderr: more than a pipe holds, read whole after the exit.
        code, out, err = await run_child(
            "sh", "-c", "head -c 1048576 /dev/zero; echo oops >&2; exit 3", timeout=30
        )
        assert (code, len(out), set(out), err) == (3, 1 << 20, {0}, b"oops\n")
        assert await host.run("sh", "-c", "cat; echo -n !", timeout=30) == "!"  # stdin: /dev/null
        assert await net_run("tr", "a-z", "A-Z", stdin="hello", timeout=30) == "HELLO"
        with pytest.raises(host.HostError, match=r"sh -c .*failed \(7\): the reason"):
            await host.run("sh", "-c", "echo the reason >&2; exit 7")
        with pytest.raises(NetError, match=r"failed \(1\): bad.*\n.*the input"):
            await net_run("sh", "-c", "echo bad >&2; exit 1", stdin="the input")
        with pytest.raises(FileNotFoundError):
            await host.run("/nonexistent/program")
        log = Path(f"/tmp/stockade-spawn-test-{os.getpid()}.log")
        try:
            with open(log, "ab") as f:
                child = await host.spawn("sh", "-c", "echo to-the-log; echo err >&2", stdout=f, stderr=f)
            assert await child.wait() == 0
            assert await child.wait() == 0  # waiting again answers at once
            assert child.output() == (b"", b"")
            assert sorted(log.read_text().split()) == ["err", "to-the-log"]
        finally:
            log.unlink()
        assert open_fds() == before

    on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_timeout_and_cancellation_kill_and_reap_the_child(loop: str) -> None:
    pids: list[int] = []

    async def scenario() -> None:
        before = open_fds()
        with pytest.raises(asyncio.TimeoutError):
            await run_child("sh", "-c", "echo $$; exec sleep 60", timeout=0.5)
        child = await host.spawn("sleep", "60")
        pids.append(child.pid)
        waiter = asyncio.ensure_future(host.run("sleep", "60"))
        await asyncio.sleep(0.3)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        child.kill()
        assert await child.wait() == -9
        child.kill()  # reaped already: nothing to signal, no error
        assert open_fds() == before

    on(loop, scenario)
    assert all(gone(pid) for pid in pids)
    leftovers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and Path(f"/proc/{pid}/stat").exists() and _parent(pid) == os.getpid()
    ]
    assert leftovers == []  # no sleep left running or unreaped


def _parent(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None

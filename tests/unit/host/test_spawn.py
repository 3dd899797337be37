"""Child processes started by ``host.spawn`` (the runtimes' ``runc run``/``delete``, host and
network commands): on the server's loop (uvloop) and on the default loop alike, output of any
size comes back whole, input goes in, failures say what the command printed, and a child that
overstays its timeout or whose caller is cancelled is killed and reaped, with no descriptor or
zombie left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
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


def open_fds() -> dict[str, str]:
    """This process's descriptors and what each one is open on."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


@pytest.mark.parametrize("loop", LOOPS)
def test_output_input_and_exit_codes(loop: str) -> None:
    async def scenario() -> None:
        # A child the loop itself watches (QEMU's, say) runs meanwhile: neither side's reaping
        # takes the other's exit status.
        theirs = await asyncio.create_subprocess_exec("sleep", "60")
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
                child = host.spawn("sh", "-c", "echo to-the-log; echo err >&2", stdout=f, stderr=f)
            assert await child.wait() == 0
            assert await child.wait() == 0  # waiting again answers at once
            assert sorted(log.read_text().split()) == ["err", "to-the-log"]
        finally:
            log.unlink()
        assert open_fds() == before
        theirs.kill()
        assert await theirs.wait() == -9

    on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_timeout_and_cancellation_kill_and_reap_the_child(loop: str) -> None:
    """Every way a wait can end early (timeout, cancel, a second cancel during the kill, the
    child killed from outside): no process of ours is left, running or zombie, and no
    descriptor (pidfd, memory file, log) stays open."""
    baseline = children()  # what else this process runs (in a full run: other tests' daemons)
    seen = set(baseline)

    async def started() -> set[int]:
        """Wait until a new child of ours is running; return the pids of the new ones."""
        for _ in range(200):
            await asyncio.sleep(0.01)
            if new := children() - seen:
                seen.update(new)
                return new
        raise AssertionError("no child started")

    async def cancelled(call: Awaitable[object], relentless: bool = False) -> set[int]:
        """Start ``call`` and cancel it mid-run (``relentless``: again at every turn of the
        loop until it ends, so that a cancel also lands in the kill's wait); return the
        children it had."""
        task = asyncio.ensure_future(call)
        pids = await started()
        task.cancel()
        while relentless and not task.done():
            await asyncio.sleep(0)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids

    async def scenario() -> None:
        await asyncio.sleep(0)  # the loop is up: whatever it opens lazily is open now
        before = open_fds()
        timed_out = asyncio.ensure_future(run_child("sleep", "60", timeout=0.5))
        pids = await started()
        with pytest.raises(asyncio.TimeoutError):
            await timed_out
        assert not any(map(alive, pids))  # killed and reaped before the error came back
        pids = await cancelled(host.run("sleep", "60"))
        assert not any(map(alive, pids))
        pids = await cancelled(net_run("sh", "-c", "cat; exec sleep 60", stdin="input"))
        assert not any(map(alive, pids))
        pids = await cancelled(host.run("sleep", "60"), relentless=True)
        await until(lambda: not any(map(alive, pids)))  # reaped by the loop, nobody waiting

        log = Path(f"/tmp/stockade-spawn-test-{os.getpid()}.log")
        try:
            with open(log, "ab") as f:
                child = host.spawn("sleep", "60", stdout=f, stderr=f)
            waiter = asyncio.ensure_future(child.wait())
            await asyncio.sleep(0.05)
            waiter.cancel()  # cancelling a wait does not stop the watch
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert alive(child.pid) and child.returncode is None
            os.kill(child.pid, signal.SIGKILL)  # from outside, as a fault would
            await until(lambda: not alive(child.pid))  # reaped without any waiter
            assert await child.wait() == -9
            assert await child.stop() == -9  # reaped already: nothing to signal, no error
        finally:
            log.unlink()
        assert open_fds() == before

    on(loop, scenario)
    assert children() - baseline == set()  # no sleep left running or unreaped


def alive(pid: int) -> bool:
    """Running or a zombie: not reaped."""
    return Path(f"/proc/{pid}").exists()


def children() -> set[int]:
    """This process's children, running or zombie."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")

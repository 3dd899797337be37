"""Fault injection: SIGKILL a sandbox's runtime or agent from the host, at chosen moments.

Processes are found through the sandbox's cgroup, never by name across the host. After each
fault the platform must (1) report ``SandboxUnavailable`` promptly, (2) still kill the sandbox
when asked, (3) leave nothing behind (hostcheck), and (4) keep serving other requests.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, cast, Iterator

from .. import Sandbox, SandboxUnavailable, StockadeError
from ..models import Isolation
from .. import host
from .runner import settled_leaks

#: Seconds within which the error must arrive after the kill.
REPORT_WITHIN = 30.0


@dataclass
class FaultResult:
    """One injected fault and how the platform came through it."""

    tier: str
    fault: str
    recovered: bool
    detail: str
    seconds_to_error: float


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def program(cmdline: str) -> str:
    """The file name of a command line's program (``/usr/bin/qemu-system-x86_64 ...`` ->
    ``qemu-system-x86_64``)."""
    return os.path.basename(cmdline.split(" ", 1)[0])


def sandbox_processes(data_dir: Path, sandbox_id: str) -> dict[int, str]:
    """Host pid -> command line of every process in the sandbox's cgroup."""
    relative = f"{host.cgroup_parent(data_dir)}/{sandbox_id}"
    return {pid: _cmdline(pid) for pid in host.cgroup_pids(relative)}


def agent_pids(data_dir: Path, sandbox_id: str) -> list[int]:
    """The process serving the agent: the agent itself (runc), the Sentry running it (runsc),
    or the microVM's QEMU (the guest kernel shields its PID 1 from SIGKILL, so on that tier an
    agent that dies is a VM that dies)."""
    procs = sandbox_processes(data_dir, sandbox_id)
    found = [p for p, cmd in procs.items() if "runsc-sandbox" in cmd or " boot " in cmd]
    found = found or [p for p, cmd in procs.items() if "agent.main" in cmd]
    found = found or [p for p, cmd in procs.items() if program(cmd).startswith("qemu-system")]
    if not found:
        raise RuntimeError(f"no agent process in the cgroup of {sandbox_id}: {procs}")
    return found


def runtime_pids(data_dir: Path, sandbox_id: str) -> list[int]:
    """The runtime's own processes (runsc sandbox and gofer; the microVM's jail and QEMU);
    runc leaves none but the container's init, which is the agent."""
    procs = sandbox_processes(data_dir, sandbox_id)
    found = [
        p for p, cmd in procs.items() if program(cmd).startswith(("runsc", "runc", "unshare", "qemu-system"))
    ]
    return found or agent_pids(data_dir, sandbox_id)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _slow_upload() -> Iterator[bytes]:
    """75 MiB over about 3 s. (An HTTP client sends its whole body before it reads the
    response, so the error can only show once the body is sent: keep the body finite.)"""
    chunk = b"u" * (256 << 10)
    for _ in range(300):
        yield chunk
        time.sleep(0.01)


def _during(action: Callable[[], object], kill: Callable[[], None]) -> tuple[BaseException | None, float]:
    """Run ``action`` in a thread, ``kill`` once it is under way; its error and the delay."""
    outcome: list[BaseException | None] = [None]

    def target() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            outcome[0] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    kill()
    thread.join(REPORT_WITHIN)
    if thread.is_alive():
        return TimeoutError(f"still blocked {REPORT_WITHIN:.0f} s after the kill"), REPORT_WITHIN
    return outcome[0], time.monotonic() - killed_at


def _judge(
    tier: str, fault: str, sb: Sandbox, data_dir: Path, error: BaseException | None, delay: float
) -> FaultResult:
    problems = []
    if not isinstance(error, SandboxUnavailable):
        problems.append(f"expected SandboxUnavailable, got {type(error).__name__}: {error}")
    try:
        sb.commands.run(["true"], timeout=30)
        problems.append("the sandbox still answered after the fault")
    except SandboxUnavailable:
        pass
    except StockadeError as exc:
        problems.append(f"the next command failed unclearly: {type(exc).__name__}: {exc}")
    try:
        sb.kill()
    except StockadeError as exc:
        problems.append(f"kill failed: {exc}")
    leaks = settled_leaks(data_dir, sb.id)
    if leaks:
        problems.append(f"left on the host: {leaks}")
    try:
        Sandbox.list(data_dir=data_dir)
    except StockadeError as exc:
        problems.append(f"the server stopped serving: {exc}")
    detail = "; ".join(problems) or f"{type(error).__name__}: {str(error)[:120]}"
    return FaultResult(tier, fault, not problems, detail, delay)


def run_faults(tier: str, data_dir: Path) -> list[FaultResult]:
    """Inject every fault once on ``tier``; each in a sandbox of its own."""
    results = []

    def fresh() -> Sandbox:
        return Sandbox.create(isolation=cast(Isolation, tier), timeout=300, data_dir=data_dir)

    # 1. The runtime's processes die while the sandbox is idle.
    sb = fresh()
    start = time.monotonic()
    _kill(runtime_pids(data_dir, sb.id))
    try:
        sb.commands.run(["true"], timeout=30)
        error: BaseException | None = None
    except BaseException as exc:  # noqa: BLE001 - judged below
        error = exc
    results.append(_judge(tier, "runtime SIGKILL, idle", sb, data_dir, error, time.monotonic() - start))

    # 2. The agent dies while a command streams output.
    sb = fresh()
    command = "while true; do echo tick; sleep 0.05; done"
    error, delay = _during(
        lambda: sb.commands.run(command, timeout=120), lambda: _kill(agent_pids(data_dir, sb.id))
    )
    results.append(_judge(tier, "agent SIGKILL, mid-exec", sb, data_dir, error, delay))

    # 3. The agent dies in the middle of a file upload.
    sb = fresh()
    error, delay = _during(
        lambda: sb.files.write("/home/user/big.bin", _slow_upload()),
        lambda: _kill(agent_pids(data_dir, sb.id)),
    )
    results.append(_judge(tier, "agent SIGKILL, mid-upload", sb, data_dir, error, delay))
    return results

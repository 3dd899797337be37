"""Faults during pause, resume and kill: SIGKILL of the daemon (engine and server are one
process) or of the sandbox's runtime (runc / runsc / QEMU) at a random moment of the operation.

Afterwards the platform must recover on its own: the operation returns or fails with a clear
error (never hangs), the sandbox settles into a clear state (running, paused, stopped, or gone
after a kill) within :data:`SETTLE_WITHIN`, the API brings it back to running (resume, start,
or stop + start for a workspace whose runtime died), every acknowledged write is there, and a
killed sandbox leaves nothing on the host. Sandboxes are ``persistence="workspace"`` so that a
sandbox stopped by a fault keeps its files and the writes can be checked.

Moments are drawn from a seeded generator over the operation's measured duration (x1.2), so a
failing run can be replayed with the same seed.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Callable, cast

from .. import CheckpointCorrupt, Sandbox, SandboxNotFound, SandboxUnavailable, StockadeError
from ..models import Isolation
from .daemon import PrivateDaemon
from .faults import FaultResult, program, sandbox_processes
from .runner import settled_leaks

OPS = ("pause", "resume", "kill")
TARGETS = ("daemon", "runtime")
RUNTIME_BINARIES = ("runc", "runsc")
#: Seconds for the interrupted operation to return, and for the sandbox to settle after it.
OP_WITHIN = 120.0
SETTLE_WITHIN = 60.0
SETTLED = ("running", "paused", "stopped")
ACK_DIR = "/home/user/acked"
#: The name of the result that checks a tier's faults left nothing (cli/security.py too).
LEAK_CHECK = "leaks after all faults"


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def runtime_targets(data_dir: Path, sandbox_id: str) -> list[int]:
    """The runtime's processes for one sandbox right now: runc/runsc command-line processes
    naming it (``runsc checkpoint <id>``, ``runc pause <id>``...) wherever they run, and the
    long-lived ones in its cgroup (runsc's sandbox and gofer, runc's container init, the
    microVM's jail and QEMU). Found by the sandbox's id and cgroup, never by name alone."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = _argv(int(entry.name))
            if argv and os.path.basename(argv[0]) in RUNTIME_BINARIES and sandbox_id in argv:
                found.add(int(entry.name))
    procs = sandbox_processes(data_dir, sandbox_id)
    runtime = [
        p for p, cmd in procs.items() if program(cmd).startswith(("runsc", "runc", "unshare", "qemu-system"))
    ]
    # runc leaves no runtime process: its container's init (the agent) is the container.
    found.update(runtime or procs)
    return sorted(found)


def _sigkill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class LifecycleFaults:
    """One tier's pause/resume/kill faults against a :class:`PrivateDaemon` it may crash."""

    def __init__(self, tier: str, daemon: PrivateDaemon, seed: int | None = None) -> None:
        self.tier, self.daemon = tier, daemon
        self.data_dir = daemon.data_dir
        self.seed = seed if seed is not None else secrets.randbelow(1 << 30)
        self.rng = random.Random(self.seed)
        self.acked: dict[str, list[str]] = {}  # sandbox id -> tokens written and acknowledged
        self.used: list[str] = []

    # -- helpers -----------------------------------------------------------------------------
    def _create(self) -> Sandbox:
        sb = Sandbox.create(
            isolation=cast(Isolation, self.tier),
            timeout=900,
            persistence="workspace",
            data_dir=self.data_dir,
            request_timeout=300,
        )
        self.used.append(sb.id)
        self.acked[sb.id] = []
        self._ack(sb)
        return sb

    def _ack(self, sb: Sandbox) -> None:
        """Write a file and remember it once the API acknowledged it."""
        token = secrets.token_hex(8)
        sb.files.write(f"{ACK_DIR}/{token}", token)
        self.acked[sb.id].append(token)

    def _kill(self, sandbox_id: str) -> None:
        """Kill by id through a fresh handle (the SDK closes one whose kill was sent)."""
        handle = Sandbox.get(sandbox_id, data_dir=self.data_dir)
        try:
            handle.kill()
        finally:
            with contextlib.suppress(StockadeError, RuntimeError):
                handle.close()

    def _connect(self, sandbox_id: str) -> None:
        Sandbox.connect(sandbox_id, data_dir=self.data_dir).close()

    def _state(self, sandbox_id: str) -> str | None:
        for info in Sandbox.list(data_dir=self.data_dir):
            if info.id == sandbox_id:
                return info.state
        return None

    def _settle(self, sandbox_id: str) -> tuple[str | None, float]:
        """Wait for a clear state seen twice in a row; ('wedged: <state>', s) if none comes."""
        start, last = time.monotonic(), "?"
        while time.monotonic() - start < SETTLE_WITHIN:
            try:
                state = self._state(sandbox_id)
            except StockadeError as exc:
                state = f"error {exc}"
            if state == last and (state is None or state in SETTLED):
                return state, time.monotonic() - start
            last = state  # type: ignore[assignment]
            time.sleep(0.5)
        return f"wedged: {last}", SETTLE_WITHIN

    def _timed(self, action: Callable[[], object]) -> float:
        start = time.monotonic()
        action()
        return time.monotonic() - start

    # -- one fault ---------------------------------------------------------------------------
    def inject(self, sb: Sandbox, op: str, target: str, window: float) -> FaultResult:
        name = f"{target} SIGKILL during {op}"
        if op == "resume":
            sb.pause()
        elif op == "pause":
            self._ack(sb)
        delay = self.rng.uniform(0, window)
        error: list[BaseException | None] = [None]

        def action() -> None:
            try:
                getattr(sb, op)()
            except BaseException as exc:  # noqa: BLE001 - judged below
                error[0] = exc

        thread = threading.Thread(target=action, daemon=True)
        thread.start()
        time.sleep(delay)
        victims = [self.daemon.pid] if target == "daemon" else runtime_targets(self.data_dir, sb.id)
        if target == "daemon":
            self.daemon.crash()
        else:
            _sigkill(victims)
        killed_at = time.monotonic()
        thread.join(OP_WITHIN)
        problems: list[str] = []
        if thread.is_alive():
            problems.append(f"the {op} call still hangs {OP_WITHIN:.0f} s after the fault")
        if target == "daemon":
            self.daemon.restart()
        state, settle = self._settle(sb.id)
        notes = [
            f"at {delay * 1e3:.0f} ms (pids {victims})",
            f"{op} -> {type(error[0]).__name__ if error[0] else 'ok'}",
            f"state {state}",
        ]
        if error[0] is not None and not isinstance(error[0], StockadeError):
            problems.append(f"{op} failed with a non-Stockade error: {error[0]!r}")
        if state is not None and state.startswith("wedged"):
            problems.append(f"no clear state after {SETTLE_WITHIN:.0f} s ({state})")
        else:
            problems += self._recover(sb, op, state, notes)
        if problems and (trace := self._last_traceback()):
            problems.append(f"the daemon's last traceback: {trace}")
        return FaultResult(
            self.tier, name, not problems, "; ".join(notes + problems)[:1600], time.monotonic() - killed_at
        )

    def _last_traceback(self, lines: int = 12) -> str:
        """The end of the daemon log's last traceback, so that a failing run explains itself."""
        try:
            log = (self.data_dir / "daemon.log").read_text(errors="replace")
        except OSError:
            return ""
        at = log.rfind("Traceback (most recent call last)")
        return " | ".join(log[at:].splitlines()[-lines:]) if at >= 0 else ""

    def _recover(self, sb: Sandbox, op: str, state: str | None, notes: list[str]) -> list[str]:
        """Bring the sandbox back through the API; check the writes; kill what must go."""
        problems: list[str] = []
        if op == "kill" or state is None:
            if state is not None:  # the kill did not land before the fault: a retry must
                notes.append("kill retried")
            try:
                self._kill(sb.id)
            except SandboxNotFound:
                pass
            except StockadeError as exc:
                problems.append(f"kill after the fault failed: {exc}")
            if self._state(sb.id) is not None:
                problems.append("the sandbox is still listed after kill")
            if leaks := settled_leaks(self.data_dir, sb.id):
                problems.append(f"left on the host: {leaks}")
            if op != "kill":
                problems.append(f"the sandbox vanished during {op}")
            return problems
        try:
            if state in ("paused", "stopped"):
                notes.append(f"connect from {state}")
                try:
                    self._connect(sb.id)
                except CheckpointCorrupt:  # clearly reported; it is now stopped, files kept
                    notes.append("checkpoint unusable -> stopped")
                    self._connect(sb.id)
            try:
                sb.commands.run(["true"], timeout=60, check=True)
            except SandboxUnavailable:  # running record, dead runtime: stop + start
                notes.append("runtime dead: stop + start")
                sb.stop()
                sb.start()
            listing = [entry.name for entry in sb.files.list(ACK_DIR)]
        except StockadeError as exc:
            return [f"could not bring it back: {type(exc).__name__}: {exc}"]
        lost = [t for t in self.acked[sb.id] if t not in listing]
        if lost:
            problems.append(f"acknowledged writes lost: {lost}")
        return problems

    # -- a tier ------------------------------------------------------------------------------
    def run(self) -> list[FaultResult]:
        results: list[FaultResult] = []
        sb = self._create()
        # Calibrate: how long a clean pause and resume take on this tier, here, now.
        window = {"pause": self._timed(sb.pause) * 1.2, "resume": self._timed(sb.resume) * 1.2}
        window["kill"] = window["pause"]
        live: Sandbox | None = sb
        for target in TARGETS:
            for op in OPS:
                if live is None:
                    live = self._create()
                try:
                    result = self.inject(live, op, target, window[op])
                except StockadeError as exc:  # the set-up (a clean pause) itself failed
                    result = FaultResult(
                        self.tier,
                        f"{target} SIGKILL during {op}",
                        False,
                        f"set-up failed: {type(exc).__name__}: {exc}",
                        0.0,
                    )
                results.append(result)
                if op == "kill" or not result.recovered:
                    with contextlib.suppress(StockadeError):
                        self._kill(live.id)
                    with contextlib.suppress(StockadeError, RuntimeError):
                        live.close()
                    live = None
        if live is not None:
            live.kill()
        leaks = [leak for sid in self.used for leak in settled_leaks(self.data_dir, sid)]
        results.append(
            FaultResult(
                self.tier,
                LEAK_CHECK,
                not leaks,
                f"seed {self.seed}: " + (f"left on the host: {leaks}" if leaks else "nothing left"),
                0.0,
            )
        )
        return results


def run_lifecycle_faults(tier: str, daemon: PrivateDaemon, seed: int | None = None) -> list[FaultResult]:
    """Inject every (target, operation) fault once on ``tier``; see the module docstring."""
    return LifecycleFaults(tier, daemon, seed).run()

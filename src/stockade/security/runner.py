"""Run the attack corpus inside sandboxes of one tier and judge every outcome from the host.

An outcome is ``blocked`` (the attempt failed), ``contained`` (it worked on the sandbox's own
things only), ``recovered`` (it broke its own sandbox, and the platform said so clearly and
cleaned up without leaks), ``succeeded`` (it crossed the boundary: a bug) or ``error`` (the
attack itself did not run properly). The host never takes an attack's word for it: a canary
secret in the output, a changed host file or a connection to a host listener means
``succeeded`` whatever the attack printed.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, cast, TypeVar

from .. import Sandbox, SandboxUnavailable, StockadeError
from ..models import Isolation
from ..engine.hostcheck import find_leaks
from .bait import MARKER, Bait
from .corpus import LIBRARY, Attack, load_corpus

#: Tiers the battery runs on; a new tier is one more entry.
TIERS: tuple[str, ...] = ("container", "gvisor", "microvm")
#: Tiers whose sandboxes are slow to make (a microVM boots in ~10 s under TCG): there the
#: attacks that need a sandbox of their own share one scratch sandbox, in an order that runs
#: the CPU hog first (on a quiet VM) and the attacks that may break it last; a broken scratch
#: sandbox is replaced before the next attack.
BATCH_FRESH: frozenset[str] = frozenset({"microvm"})
#: Tiers whose sandboxes have a kernel of their own; an attack may call what root gains there
#: "contained" (attacks/_lib.py: privileged), nowhere else.
OWN_KERNEL: frozenset[str] = frozenset({"gvisor", "microvm"})
PASSED = ("blocked", "contained", "recovered")
REMOTE_DIR = "/tmp/attacks"
FRESH_DISK_MB = 64
FLOOD_LIMIT = 8 << 20
LATENCY_SAMPLES = 30
#: Seconds past a command's own timeout after which the host side counts as hung.
HANG_GRACE = 15.0
T = TypeVar("T")


class Hung(Exception):
    """A call into the platform did not return: the host side hangs on a sandbox."""


def bounded(call: Callable[[], T], seconds: float) -> T:
    """``call()``, or :class:`Hung` if it has not returned within ``seconds`` (it is left
    running in a daemon thread; killing the sandbox ends it)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise Hung(f"no answer {seconds:.0f} s later")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


@dataclass
class AttackResult:
    """How one attack, run as one user on one tier, ended."""

    tier: str
    attack: str
    user: str
    outcome: str
    detail: str
    seconds: float
    figures: dict[str, float] = field(default_factory=dict)
    #: The attack left its own sandbox unusable (but answering): the runner replaces it.
    damaged: bool = False

    @property
    def passed(self) -> bool:
        return self.outcome in PASSED


def command_latency(sb: Sandbox, samples: int = LATENCY_SAMPLES) -> float:
    """Median seconds of ``true`` run through the whole stack (SDK, server, agent)."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        sb.commands.run(["true"], timeout=30)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def settled_leaks(data_dir: Path, sandbox_id: str, wait: float = 3.0) -> list[str]:
    """What ``sandbox_id`` left on the host, allowing a moment for loop devices to detach."""
    deadline = time.monotonic() + wait
    while (leaks := find_leaks(data_dir, sandbox_id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return leaks


def _verdict(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict) and parsed.get("outcome"):
            return parsed
    return None


def _host_boot_id() -> str:
    """Attacks compare it with their kernel's to tell a kernel of their own (gVisor's Sentry,
    a microVM's guest) from the host's: privileges gained there are contained."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class TierRun:
    """One tier's run: the bait, a neighbour sandbox, a shared attacker sandbox."""

    def __init__(
        self, tier: str, data_dir: Path, bait: Bait, attacks: list[Attack], hog_seconds: float = 8.0
    ) -> None:
        self.tier = tier
        self.data_dir = data_dir
        self.bait = bait
        self.attacks = attacks
        self.hog_seconds = hog_seconds
        self.neighbour_secret = f"{MARKER}-{bait.secret}-neighbour"
        self.neighbour: Sandbox | None = None
        self.shared: Sandbox | None = None
        self.batch = tier in BATCH_FRESH
        #: The scratch sandbox of batched fresh attacks (BATCH_FRESH tiers).
        self.scratch: Sandbox | None = None
        self.discarded: list[Sandbox] = []

    # -- sandboxes ---------------------------------------------------------------------------
    def _create(self, attacks: list[Attack], **kwargs: Any) -> Sandbox:
        """A sandbox holding ``attacks`` and the corpus library in REMOTE_DIR."""
        sb = Sandbox.create(
            isolation=cast(Isolation, self.tier), timeout=600, data_dir=self.data_dir, **kwargs
        )
        for attack in attacks:
            sb.files.write(f"{REMOTE_DIR}/{attack.filename}", attack.path.read_bytes())
            library = attack.path.parent / LIBRARY
        if attacks:
            sb.files.write(f"{REMOTE_DIR}/{LIBRARY}", library.read_bytes())
        return sb

    def _shared_attacks(self) -> list[Attack]:
        return [a for a in self.attacks if not a.fresh]

    def _scratch(self) -> Sandbox:
        return self._create([a for a in self.attacks if a.fresh], disk_mb=FRESH_DISK_MB)

    def __enter__(self) -> "TierRun":
        # The sandboxes boot side by side (a microVM's boot is mostly waiting on one core).
        with ThreadPoolExecutor(3) as pool:
            neighbour = pool.submit(self._create, [])
            shared = pool.submit(self._create, self._shared_attacks())
            scratch = (
                pool.submit(self._scratch) if self.batch and any(a.fresh for a in self.attacks) else None
            )
            self.neighbour = neighbour.result()
            self.shared = shared.result()
            self.scratch = scratch.result() if scratch else None
        for path in ("/home/user/secret.txt", "/tmp/secret.txt"):
            self.neighbour.files.write(path, self.neighbour_secret)
        return self

    def __exit__(self, *exc: object) -> None:
        for sb in (self.shared, self.scratch, self.neighbour):
            if sb is not None:
                sb.kill()

    def cleanup_result(self) -> AttackResult:
        """After ``__exit__``: the shared, scratch and neighbour sandboxes (and every one the
        run replaced) left nothing on the host."""
        leaks = [
            leak
            for sb in (self.shared, self.scratch, self.neighbour, *self.discarded)
            if sb is not None
            for leak in settled_leaks(self.data_dir, sb.id)
        ]
        return AttackResult(
            self.tier,
            "cleanup",
            "-",
            "succeeded" if leaks else "contained",
            f"left on the host: {leaks}" if leaks else "nothing left",
            0.0,
        )

    def sandbox_dir(self, sb: Sandbox) -> Path:
        return self.data_dir / "sandboxes" / sb.id

    def env(self, sb: Sandbox, disk_mb: int) -> dict[str, str]:
        assert self.neighbour is not None
        return {
            **self.bait.env(),
            "STOCKADE_SANDBOX_DIR": str(self.sandbox_dir(sb)),
            "STOCKADE_TIER": self.tier,
            "STOCKADE_HOST_BOOT_ID": _host_boot_id(),
            "STOCKADE_NEIGHBOUR_DIR": str(self.sandbox_dir(self.neighbour)),
            "STOCKADE_NEIGHBOUR_ID": self.neighbour.id,
            "STOCKADE_DISK_MB": str(disk_mb),
            "STOCKADE_HOG_SECONDS": str(self.hog_seconds),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    # -- one attack --------------------------------------------------------------------------
    def order(self) -> list[Attack]:
        """The attacks in run order; where fresh attacks are batched, those that may break
        their sandbox go last among the shared and the scratch ones, and the hog first."""
        if not self.batch:
            return self.attacks
        shared = sorted(self._shared_attacks(), key=lambda a: (a.may_break, a.name))
        fresh = sorted(
            (a for a in self.attacks if a.fresh), key=lambda a: (a.mode != "hog", a.may_break, a.name)
        )
        return [*shared, *fresh]

    def run(self) -> list[AttackResult]:
        results = []
        for attack in self.order():
            for user in attack.users:
                results.append(self.run_one(attack, user))
        results.append(self.check_neighbour())
        return results

    def run_one(self, attack: Attack, user: str) -> AttackResult:
        start = time.monotonic()
        own = attack.fresh and not self.batch  # a sandbox for this attack alone
        if own:
            sb = self._create([attack], disk_mb=FRESH_DISK_MB)
        elif attack.fresh:
            sb = self.scratch = self.scratch or self._scratch()
        else:
            sb = self.shared = self.shared or self._create(self._shared_attacks())
        disk_mb = FRESH_DISK_MB if attack.fresh else sb.info.disk_mb
        result = AttackResult(self.tier, attack.name, user, "error", "", 0.0)
        try:
            self._attack(sb, attack, user, self.env(sb, disk_mb), result)
        finally:
            broken = result.outcome == "recovered" or result.damaged
            if own or broken:
                self._discard(sb, result)
            if broken and not own:  # replaced when next needed
                if attack.fresh:
                    self.scratch = None
                else:
                    self.shared = None
            result.seconds = time.monotonic() - start
        return result

    def _discard(self, sb: Sandbox, result: AttackResult) -> None:
        """Kill a sandbox an attack ran in; anything it leaves on the host is a failure."""
        try:
            bounded(sb.kill, 60)
        except Hung as exc:
            result.outcome = "succeeded"
            result.detail = f"killing the sandbox hung ({exc}); {result.detail}"
        self.discarded.append(sb)
        leaks = settled_leaks(self.data_dir, sb.id)
        if leaks:
            result.outcome = "succeeded"
            result.detail = f"killing the sandbox left on the host: {leaks}; {result.detail}"

    def _attack(
        self, sb: Sandbox, attack: Attack, user: str, env: dict[str, str], result: AttackResult
    ) -> None:
        argv = attack.argv(REMOTE_DIR)
        stdout = stderr = ""
        try:
            if attack.mode == "hog":
                stdout, stderr = self._hog(sb, attack, user, env, result)
            else:
                limit = FLOOD_LIMIT if attack.mode == "flood" else None
                run = bounded(
                    lambda: sb.commands.run(
                        argv, user=user, envs=env, cwd=REMOTE_DIR, timeout=attack.timeout, max_output=limit
                    ),
                    attack.timeout + HANG_GRACE,
                )
                stdout, stderr = run.stdout, run.stderr
                if attack.mode == "flood":
                    result.figures["output_bytes"] = len(run.stdout_bytes)
                    ok = run.status == "output_limit" and len(run.stdout_bytes) <= 2 * FLOOD_LIMIT
                    result.outcome = "contained" if ok else "succeeded"
                    result.detail = f"status {run.status}, {len(run.stdout_bytes)} bytes kept"
                    stdout = stdout[-4096:]
        except SandboxUnavailable as exc:
            self._judge_broken(sb, exc, result)
        except Hung as exc:  # a dead or frozen agent must never hang the host side
            result.outcome, result.damaged = "succeeded", True
            result.detail = f"the platform hung: the command (timeout {attack.timeout:.0f} s) got {exc}"
        except StockadeError as exc:  # the sandbox answers, but no longer runs attacks
            result.outcome, result.damaged = "error", True
            result.detail = f"could not run: {type(exc).__name__}: {exc}"
        else:
            if attack.mode != "flood":
                self._judge_verdict(stdout, stderr, result)
            self._check_alive(sb, result)
        self._check_host(result, stdout, stderr)

    def _hog(
        self, sb: Sandbox, attack: Attack, user: str, env: dict[str, str], result: AttackResult
    ) -> tuple[str, str]:
        argv = attack.argv(REMOTE_DIR)
        assert self.neighbour is not None
        idle = command_latency(self.neighbour)
        handle = sb.commands.run(
            argv, user=user, envs=env, cwd=REMOTE_DIR, timeout=attack.timeout, background=True
        )
        time.sleep(1.0)  # let the hog reach full speed
        during = command_latency(self.neighbour)
        run = bounded(handle.wait, attack.timeout + HANG_GRACE)
        result.figures = {
            "neighbour_latency_idle_ms": idle * 1e3,
            "neighbour_latency_hog_ms": during * 1e3,
            "slowdown": during / idle,
        }
        return run.stdout, run.stderr

    def _judge_verdict(self, stdout: str, stderr: str, result: AttackResult) -> None:
        verdict = _verdict(stdout)
        if verdict is None:
            result.outcome = "error"
            result.detail = f"no verdict; stdout {stdout[-300:]!r} stderr {stderr[-500:]!r}"
            return
        result.outcome = str(verdict["outcome"])
        result.detail = json.dumps(verdict.get("detail"))[:600]
        detail = verdict.get("detail")
        own = isinstance(detail, dict) and detail.get("kernel") == "the sandbox's own"
        if own and self.tier not in OWN_KERNEL:
            result.outcome = "succeeded"
            result.detail = f"privileged operations worked on the host's kernel; {result.detail}"

    def _judge_broken(self, sb: Sandbox, exc: StockadeError, result: AttackResult) -> None:
        """The attack took its own sandbox down: demand a clear error, then a clean kill."""
        problems = []
        try:
            bounded(lambda: sb.commands.run(["true"], timeout=30), 30 + HANG_GRACE)
            problems.append("the sandbox answered again after breaking (unexpected)")
        except SandboxUnavailable:
            pass
        except Hung as again:
            problems.append(f"the platform hung on the next command: {again}")
        except StockadeError as again:
            problems.append(f"the next command failed unclearly: {type(again).__name__}: {again}")
        result.outcome = "succeeded" if problems else "recovered"
        result.damaged = True
        result.detail = f"sandbox broke ({exc}); " + (
            "; ".join(problems) or "reported as sandbox_unavailable"
        )

    def _check_alive(self, sb: Sandbox, result: AttackResult) -> None:
        """The sandbox still runs commands as ``user``; if it answers but cannot (root inside
        wrecked its own root filesystem), the damage is its own: it gets replaced."""
        try:
            bounded(lambda: sb.commands.run(["true"], user="user", timeout=30, check=True), 30 + HANG_GRACE)
        except SandboxUnavailable as exc:
            self._judge_broken(sb, exc, result)
        except Hung as exc:
            result.outcome, result.damaged = "succeeded", True
            result.detail += f"; the platform hung afterwards: `true` got {exc}"
        except StockadeError as exc:
            result.damaged = True
            result.detail += f"; damaged its own sandbox ({type(exc).__name__}: {exc})"

    def _check_host(self, result: AttackResult, stdout: str, stderr: str) -> None:
        leaked = self.bait.leaked(stdout, stderr)
        if self.neighbour_secret in stdout or self.neighbour_secret in stderr:
            leaked.append("the neighbour's secret")
        changed = self.bait.violations()
        if leaked or changed:
            result.outcome = "succeeded"
            result.detail = f"host secrets in output: {leaked}; host changes: {changed}; " + result.detail

    def check_neighbour(self) -> AttackResult:
        """After everything: the neighbour still works and its files are its own."""
        assert self.neighbour is not None
        start = time.monotonic()
        outcome, detail = "contained", "neighbour intact"
        try:
            for path in ("/home/user/secret.txt", "/tmp/secret.txt"):
                if self.neighbour.files.read(path) != self.neighbour_secret:
                    outcome, detail = "succeeded", f"the neighbour's {path} changed"
            if self.neighbour.commands.run("cat /etc/os-release").stdout.count("STOCKADE-TAMPER"):
                outcome, detail = "succeeded", "the neighbour sees another sandbox's image writes"
        except StockadeError as exc:
            outcome, detail = "succeeded", f"the neighbour broke: {exc}"
        return AttackResult(self.tier, "neighbour_intact", "-", outcome, detail, time.monotonic() - start)


def run_tier(
    tier: str, data_dir: Path, attacks: list[Attack] | None = None, hog_seconds: float = 8.0
) -> list[AttackResult]:
    """Plant the bait, run every attack on ``tier`` against the daemon of ``data_dir``."""
    attacks = attacks if attacks is not None else load_corpus()
    with Bait(data_dir) as bait:
        with TierRun(tier, data_dir, bait, attacks, hog_seconds) as run:
            results = run.run()
        results.append(run.cleanup_result())
    return results

"""Issue 17: the sandbox agent's start-up, before and after, interleaved in one run.

    .venv/bin/python -m bench.agent_start --baseline REF [--runs 15] [--host-runs 40]

Two agent trees: this tree's ``src/stockade/agent`` ("after") and the one at git ``REF``
("before", e.g. the last commit before the change). For each, medians of:

- host: the agent started as the drivers start it (``python3 -I -S -c ... main(['--listen',
  ...])``, with the image's Python, /usr/bin/python3, where there is one) until it listens,
  and until it answers ``hello``; and the modules it imported by then (``-X importtime``);
- per tier (container = runc, gvisor = runsc), through the runtime driver: runtime run, agent
  ready (start minus the runtime's run), and create-to-first-output (create, start, connect,
  ``process.start`` of ``true`` to its END); next to the raw ``<runtime> run`` of /bin/true +
  delete on the same kind of bundle, and the raw run of ``python3 -I -S -c pass`` + delete
  (Python's own start: the floor under the agent), measured in the same round as
  bench.create_path does ("raw" columns: run and delete, so compare them with create->output
  only as a ratio).

Rounds alternate which tree goes first, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stockade.agent import __file__ as agent_file
from stockade.agent import protocol as p
from stockade.config import default_images_dir
from stockade.images import ImageStore
from stockade.runtimes.base import SandboxSpec
from stockade.runtimes.ocidriver import OciDriver
from stockade.runtimes.runc import RuncDriver
from stockade.runtimes.runsc import RunscDriver

from ._common import machine, table
from .create_path import Raw, timed_runtime_runs

DRIVERS: dict[str, type[OciDriver]] = {"container": RuncDriver, "gvisor": RunscDriver}
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
REPO = Path(__file__).resolve().parents[1]


def checkout(ref: str, into: Path) -> Path:
    """The agent package at git ``ref``, as a directory a sandbox can read."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "src/stockade/agent"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into), "--strip-components=2"], input=archive, check=True)
    into.chmod(0o755)
    return into / "agent"


def agent_code(agent_dir: Path, sock: str) -> str:
    """What runtimes/oci.py's AGENT_ARGS runs, with this tree's directory and socket."""
    return (
        f"import sys; sys.path[:0] = [{str(agent_dir.parent)!r}]; "
        f"from agent.main import main; main(['--listen', {sock!r}])"
    )


def hello(conn: socket.socket) -> None:
    conn.sendall(p.encode_json(p.Kind.OPEN, 1, {"method": "hello", "params": {}}))
    while True:
        length, _, kind = p.parse_header(conn.recv(p.HEADER.size, socket.MSG_WAITALL))
        conn.recv(length, socket.MSG_WAITALL)
        if kind is p.Kind.END:
            return


def host_once(agent_dir: Path, work: Path, *flags: str) -> tuple[float, float, str]:
    """Seconds until the agent listens and until it answers hello; its stderr."""
    sock = str(work / "agent.sock")
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(
            [PYTHON, *flags, "-I", "-S", "-c", agent_code(agent_dir, sock)],
            stdin=subprocess.DEVNULL,
            stderr=err,
        )
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            while True:
                try:
                    conn.connect(sock)
                    break
                except (FileNotFoundError, ConnectionRefusedError):  # not bound, or bound
                    if proc.poll() is not None:  # but not listening
                        raise SystemExit(f"the agent exited with {proc.returncode}") from None
                    time.sleep(0.0002)
            listening = time.perf_counter() - t
            hello(conn)
            answered = time.perf_counter() - t
        finally:
            conn.close()
            proc.kill()
            proc.wait()
        err.seek(0)
        return listening, answered, err.read().decode(errors="replace")


def modules_by_hello(agent_dir: Path, work: Path) -> list[str]:
    """The modules the agent imported until it answered hello (``-X importtime``)."""
    _, _, err = host_once(agent_dir, work, "-X", "importtime")
    return [
        line.split("|")[-1].strip()
        for line in err.splitlines()
        if line.startswith("import time:")
        and not line.endswith("| imported package")
        and "cumulative" not in line
    ]


async def sandbox_once(driver: OciDriver, data: Path, n: int) -> dict[str, float]:
    """One sandbox through the driver: its phases up to the first command's END."""
    spec = SandboxSpec(id=f"as{n}", image="base", directory=data / "sandboxes" / f"as{n}")
    with timed_runtime_runs(driver) as runs:
        try:
            t0 = time.perf_counter()
            await driver.create(spec)
            t1 = time.perf_counter()
            await driver.start(spec)
            t2 = time.perf_counter()
            channel = await driver.connect(spec)
            outcome = await channel.call(p.Method.PROCESS_START, {"cmd": "true"})
            t3 = time.perf_counter()
            await channel.aclose()
        finally:
            await driver.destroy(spec)
    if outcome.get("exit_code") != 0:
        raise SystemExit(f"true failed in the sandbox: {outcome}")
    run = runs[0] if runs else 0.0
    return {
        "runtime run": run,
        "agent ready": t2 - t1 - run,
        "first command": t3 - t2,
        "create->output": t3 - t0,
    }


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


def ratio(before: list[float], after: list[float]) -> str:
    return f"{statistics.median(after) / statistics.median(before):.2f}x"


def host_table(trees: dict[str, Path], runs: int, work: Path) -> None:
    samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in trees}
    order = list(trees)
    for n in range(runs + 1):
        for name in order if n % 2 else order[::-1]:
            listening, answered, _ = host_once(trees[name], work)
            if n:  # the first of each warms the page cache
                samples[name][0].append(listening)
                samples[name][1].append(answered)
    rows: list[tuple[str, ...]] = [("agent", "modules by hello", "start->listening", "start->hello answered")]
    for name, path in trees.items():
        rows.append(
            (name, str(len(modules_by_hello(path, work))), ms(samples[name][0]), ms(samples[name][1]))
        )
    if len(trees) == 2:
        (a, b) = (samples[k] for k in trees)
        rows.append(("after/before", "", ratio(a[0], b[0]), ratio(a[1], b[1])))
    print(f"\nhost, {PYTHON} -I -S, median of {runs}:")
    table(rows)


def tier_table(tier: str, trees: dict[str, Path], runs: int, images: ImageStore) -> None:
    names = [*trees, "raw true", "raw python3"]
    dirs = {name: Path(tempfile.mkdtemp(prefix="stockade-bench-as-", dir="/var/tmp")) for name in names}
    for d in dirs.values():
        (d / "sandboxes").mkdir(mode=0o711)
        d.chmod(0o711)
    drivers = {name: DRIVERS[tier](dirs[name], images, trees.get(name, trees["after"])) for name in names}
    # Two raw baselines: /bin/true, and Python's own start (the floor under a Python agent).
    raw = Raw(drivers["raw true"], dirs["raw true"])
    python = Raw(drivers["raw python3"], dirs["raw python3"], ("python3", "-I", "-S", "-c", "pass"))
    raw_s: list[float] = []
    python_s: list[float] = []
    phases: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    order = list(trees)
    try:
        for n in range(runs + 1):
            r, py = raw.once(), python.once()
            found = {
                name: asyncio.run(sandbox_once(drivers[name], dirs[name], n))
                for name in (order if n % 2 else order[::-1])
            }
            if n == 0:
                continue  # the first of each warms caches (blank disk, page cache)
            raw_s.append(r)
            python_s.append(py)
            for name, d in found.items():
                for key, value in d.items():
                    phases[name].setdefault(key, []).append(value)
    finally:
        raw.close()
        python.close()
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    rows: list[tuple[str, ...]] = [
        (
            "agent",
            "raw true",
            "raw python3",
            "runtime run",
            "agent ready",
            "first command",
            "create->output",
            "ratio to raw",
        )
    ]
    for name in trees:
        ph = phases[name]
        rows.append(
            (
                name,
                ms(raw_s),
                ms(python_s),
                ms(ph["runtime run"]),
                ms(ph["agent ready"]),
                ms(ph["first command"]),
                ms(ph["create->output"]),
                f"{statistics.median(ph['create->output']) / statistics.median(raw_s):.2f}x",
            )
        )
    if len(trees) == 2:
        a, b = (phases[k] for k in trees)
        rows.append(
            (
                "after/before",
                "",
                "",
                ratio(a["runtime run"], b["runtime run"]),
                ratio(a["agent ready"], b["agent ready"]),
                ratio(a["first command"], b["first command"]),
                ratio(a["create->output"], b["create->output"]),
                "",
            )
        )
    print(f"\n{tier} (driver, cold, no pool), median of {runs}:")
    table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", help="git ref of the agent to compare with ('before')")
    parser.add_argument("--runs", type=int, default=15, help="sandboxes per tree and tier")
    parser.add_argument("--host-runs", type=int, default=40)
    parser.add_argument("--tier", action="append", choices=list(DRIVERS))
    args = parser.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    work = Path(tempfile.mkdtemp(prefix="stockade-bench-as-"))
    work.chmod(0o755)
    try:
        trees: dict[str, Path] = {}
        if args.baseline:
            (work / "before").mkdir()
            trees["before"] = checkout(args.baseline, work / "before")
        trees["after"] = Path(agent_file).parent
        for tree in trees.values():  # as the drivers do (the agent's mount is read-only)
            subprocess.run([PYTHON, "-m", "compileall", "-q", str(tree)], check=True)
        host_table(trees, args.host_runs, work)
        if args.runs:
            images = ImageStore(default_images_dir())
            for tier in args.tier or list(DRIVERS):
                tier_table(tier, trees, args.runs, images)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

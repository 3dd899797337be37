"""Shared fixtures: a real Stockade daemon on a private data directory, and sandbox factories
that kill what they made and check that nothing was left behind on the host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from stockade import Sandbox
from stockade.config import default_images_dir, local_socket
from stockade.engine.hostcheck import cgroup_parent_left, find_leaks

# The integration harness (server_harness.py) is shared by the compatibility tests and the
# benchmarks. One conftest only: a second one would shadow this module as "conftest".
sys.path.insert(0, str(Path(__file__).parent / "integration"))

TIERS = ["container", "gvisor"]
#: With the microVM tier (TCG here: a snapshot-started VM is ready in about a second).
ALL_TIERS = [*TIERS, "microvm"]
IMAGES_DIR = default_images_dir()
# Every daemon, server and CLI the tests start shares the installed image store, whatever data
# directory it gets.
os.environ["STOCKADE_IMAGES_DIR"] = str(IMAGES_DIR)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (run scripts/test as root)")
    if not (IMAGES_DIR / "base" / "image.json").exists():
        pytest.fail(f"no base image in {IMAGES_DIR}: run scripts/install first")


class Daemon:
    """A `python -m stockade.server` process on a unix socket, stopped by its recorded pid."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.socket = local_socket(data_dir)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Daemon":
        log = open(self.data_dir / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockade.server", "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "STOCKADE_IMAGES_DIR": str(IMAGES_DIR)},
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.log_tail()}")
            if self._listening():
                with self.client() as client:
                    if client.get("/health").status_code == 200:
                        return self
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not answer: {self.log_tail()}")

    def _listening(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def client(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://stockade", timeout=60
        )

    def log_tail(self) -> str:
        return (self.data_dir / "daemon.log").read_text(errors="replace")[-3000:]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill_sandboxes(self) -> None:
        with self.client() as c:
            for item in c.get("/sandboxes", params={"limit": 1000}).json()["items"]:
                c.delete(f"/sandboxes/{item['id']}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """One daemon for the session, on its own data directory (the image store is shared)."""
    needs_root()
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-test-", dir="/var/tmp"))
    d = Daemon(data_dir).start()
    old = os.environ.get("STOCKADE_DATA_DIR")
    os.environ["STOCKADE_DATA_DIR"] = str(data_dir)
    yield d
    try:
        d.kill_sandboxes()
    finally:
        d.stop()
        if old is None:
            os.environ.pop("STOCKADE_DATA_DIR", None)
        else:
            os.environ["STOCKADE_DATA_DIR"] = old
    leaks = find_leaks(data_dir) + cgroup_parent_left(data_dir)
    subprocess.run(["rm", "-rf", str(data_dir)], check=False)
    assert not leaks, f"the session left things behind: {leaks}"


@pytest.fixture(params=TIERS)
def tier(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_sandbox(daemon: Daemon) -> Iterator[Callable[..., Sandbox]]:
    """Create sandboxes for one test; each is killed, and checked for leaks, at teardown."""
    made: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        kwargs.setdefault("timeout", 120)
        sb = Sandbox.create(**kwargs)
        made.append(sb)
        return sb

    yield make
    leaks = []
    for sb in made:
        sb.kill()
        leaks += find_leaks(daemon.data_dir, sb.id)
    assert not leaks, f"killed sandboxes left things behind: {leaks}"


@pytest.fixture
def sandbox(make_sandbox: Callable[..., Sandbox], tier: str) -> Sandbox:
    """A fresh sandbox on each tier."""
    return make_sandbox(isolation=tier)

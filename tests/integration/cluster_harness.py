"""A Stockade cluster on one machine for tests and benchmarks: a Ray head, hosts (each its own
Ray node, engine and data directory) and an API replica, all real processes stopped by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from stockade.config import default_images_dir

from server_harness import ADMIN_KEY, STOCKADE, free_port

RAY = str(Path(STOCKADE).parent / "ray")
SLOTS = 2  # container slots per host
CLUSTER_SECRET = "test-cluster-secret-" + os.urandom(8).hex()
#: Ray's token authentication is on for the head, the hosts and the replicas (docs/cluster.md).
RAY_TOKEN = os.urandom(32).hex()


def env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "STOCKADE_IMAGES_DIR": str(default_images_dir()),
        "STOCKADE_POOL_SIZE": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "STOCKADE_CLUSTER_SECRET": CLUSTER_SECRET,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": RAY_TOKEN,
        **extra,
    }
    for name in ("STOCKADE_API_URL", "STOCKADE_API_KEY", "STOCKADE_DATABASE_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited ({proc.returncode}): {log.read_text(errors='replace')[-3000:]}"
            )
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready in {timeout} s: {log.read_text(errors='replace')[-3000:]}")


class Host:
    """`stockade host` on its own data directory (its Ray node lives and dies with it)."""

    def __init__(
        self,
        name: str,
        address: str,
        slots: str = f"container={SLOTS},gvisor=1",
        shared_dir: Path | None = None,
        own_images: bool = False,
    ) -> None:
        self.name = name
        self.address = address
        self.slots = slots
        self.shared_dir = shared_dir
        self.data_dir = Path(tempfile.mkdtemp(prefix="stockade-srv-", dir="/var/tmp"))
        self.log = self.data_dir / "host.log"
        #: The host's own image store (else the machine's, shared by every host): it starts
        #: with the operator's ``base`` only, hard-linked from the machine's store.
        self.images_dir = self.data_dir / "images" if own_images else default_images_dir()
        if own_images:
            self.images_dir.mkdir()
            subprocess.run(
                ["cp", "-al", str(default_images_dir() / "base"), str(self.images_dir / "base")], check=True
            )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Host":
        """Start (or restart) the host; return once its actor serves."""
        before = self._readies()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    STOCKADE,
                    "host",
                    "--cluster",
                    self.address,
                    "--data-dir",
                    str(self.data_dir),
                    "--name",
                    self.name,
                    "--slots",
                    self.slots,
                    "--node-ip",
                    "127.0.0.1",
                    *(["--shared-dir", str(self.shared_dir)] if self.shared_dir else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env(STOCKADE_IMAGES_DIR=str(self.images_dir)),
            )
        wait(f"host {self.name}", lambda: self._readies() > before, self.proc, self.log)
        return self

    def _readies(self) -> int:
        return self.log.read_text().count("ready on Ray node") if self.log.exists() else 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def sweep(data_dir: Path) -> list[str]:
    """Open an engine on a host's data directory and kill what it still holds; return the ids
    found (none if the cluster cleaned up after itself)."""
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from stockade.engine import Engine, EngineConfig\n"
        "async def main():\n"
        "    e = Engine(EngineConfig(data_dir=Path(sys.argv[1])))\n"
        "    await e.open()\n"
        "    print(' '.join(r.id for r in e.records()))\n"
        "    await e.close(kill_all=True)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(data_dir)], env=env(), capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        return [f"(sweeping {data_dir} failed: {out.stderr[-500:]})"]
    return out.stdout.split()


class Cluster:
    def __init__(self) -> None:
        self.ray_dir = Path(tempfile.mkdtemp(prefix="stockade-ray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head: subprocess.Popen[bytes] | None = None
        self.hosts: dict[str, Host] = {}
        self.api: subprocess.Popen[bytes] | None = None
        self.api_url = ""
        self.apis: list[subprocess.Popen[bytes]] = []
        self.replica_urls: list[str] = []
        self.database_url = ""
        self.postgres: Any = None  # the harness's Postgres, when the test made one

    def start_head(self) -> None:
        log = self.ray_dir / "head.log"
        with open(log, "ab") as out:
            self.head = subprocess.Popen(
                [
                    RAY,
                    "start",
                    "--head",
                    "--port",
                    str(self.port),
                    "--node-ip-address",
                    "127.0.0.1",
                    "--num-cpus",
                    "0",
                    "--include-dashboard",
                    "false",
                    "--temp-dir",
                    str(self.ray_dir),
                    "--object-store-memory",
                    "80000000",
                    "--disable-usage-stats",
                    "--block",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env(),
            )
        wait("ray head", lambda: "block forever" in log.read_text(), self.head, log)

    def start_api(self, database_url: str) -> str:
        """Start one more API replica; return its URL (the first is :attr:`api_url`)."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        data_dir = self.ray_dir / f"replica-{port}"
        log = self.ray_dir / f"api-{port}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [
                    STOCKADE,
                    "serve",
                    "--cluster",
                    self.address,
                    "--database-url",
                    database_url,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(data_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env(STOCKADE_ADMIN_KEY=ADMIN_KEY, STOCKADE_PLACEMENT_WAIT="3"),
            )
        self.apis.append(proc)
        self.replica_urls.append(url)
        if self.api is None:
            self.api, self.api_url = proc, url

        def ready() -> bool:
            try:
                return httpx.get(url + "/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait("API replica", ready, proc, log)
        return url

    def client(self, url: str | None = None, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=url or self.api_url, timeout=120, headers={"Authorization": f"Bearer {key}"}
        )

    def leftover_processes(self) -> list[str]:
        """Processes of ours still running: anything whose command line names a directory
        this cluster made (Ray's processes name their session directory)."""
        ours = [str(self.ray_dir)] + [str(h.data_dir) for h in self.hosts.values()]
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(d in cmdline for d in ours):
                found.append(f"{entry.name}: {cmdline[:200]}")
        return found

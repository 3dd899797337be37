"""A real `stockade serve` on a loopback port (SQLite or a throwaway PostgreSQL), stopped by pid.

Imported by the test_server_*.py modules, which re-export the fixtures they use.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from stockade.config import default_images_dir
from stockade.engine.hostcheck import find_leaks

ADMIN_KEY = "sk_admin_test_" + "x" * 24
STOCKADE = str(Path(sys.executable).parent / "stockade")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`stockade serve` as a child process on its own data directory and port."""

    def __init__(
        self, data_dir: Path, database_url: str | None = None, admin_key: str | None = ADMIN_KEY, **env: str
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.admin_key = admin_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> "Server":
        env = {
            **os.environ,
            "STOCKADE_IMAGES_DIR": str(default_images_dir()),
            "STOCKADE_POOL_SIZE": "0",
            **self.env,
        }
        for name in (
            "STOCKADE_API_URL",
            "STOCKADE_API_KEY",
            "STOCKADE_ADMIN_KEY",
            "STOCKADE_DATABASE_URL",
            "STOCKADE_CONFIG",
        ):
            env.pop(name, None)
        if self.admin_key:
            env["STOCKADE_ADMIN_KEY"] = self.admin_key
        if self.database_url:
            env["STOCKADE_DATABASE_URL"] = self.database_url
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                STOCKADE,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not get ready: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")[-4000:]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def admin(self) -> httpx.Client:
        assert self.admin_key
        return self.client(self.admin_key)

    def new_key(self, tenant: str, **body: Any) -> str:
        with self.admin() as c:
            r = c.post("/keys", json={"tenant": tenant, **body})
            assert r.status_code == 201, r.text
            return str(r.json()["key"])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill_all_sandboxes(self) -> None:
        with self.admin() as c:
            for item in c.get("/sandboxes", params={"limit": 1000}).json()["items"]:
                c.delete(f"/sandboxes/{item['id']}")


class Postgres:
    """A throwaway PostgreSQL cluster from Debian's packages, on a loopback port, run as the
    postgres user from a temporary directory, stopped by its pid."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not found:
            pytest.fail("PostgreSQL is not installed: run scripts/install --test")
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="stockade-pg-", dir="/var/tmp"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Postgres":
        user = pwd.getpwnam("postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        data = self.dir / "data"
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            user="postgres",
            capture_output=True,
            cwd=self.dir,
        )
        return self.resume()

    def resume(self) -> "Postgres":
        """Run the server on the cluster made by :meth:`start` (again after :meth:`pause`)."""
        data = self.dir / "data"
        log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "fsync=off",
            ],
            user="postgres",
            stdout=log,
            stderr=log,
            cwd=self.dir,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError((self.dir / "postgres.log").read_text()[-2000:])

    def create_database(self, name: str) -> str:
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
            check=True,
            capture_output=True,
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def pause(self) -> None:
        """Stop the server, keeping its data (:meth:`resume` starts it again)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("server integration tests need root (run scripts/test as root)")
    if not (default_images_dir() / "base" / "image.json").exists():
        pytest.fail("no base image: run scripts/install first")


def new_data_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="stockade-srv-", dir="/var/tmp"))


def finish(server: Server) -> None:
    """Kill what is left, stop the server, check the host is clean, remove the data dir."""
    try:
        try:
            if server.proc is None or server.proc.poll() is not None:
                server.start()  # a test that failed with the server down: clean up through it
            server.kill_all_sandboxes()
        finally:
            server.stop()
        leaks = find_leaks(server.data_dir)
    finally:  # even when the server could not start again: never leave the directory
        subprocess.run(["rm", "-rf", str(server.data_dir)], check=False)
    assert not leaks, f"the server left things behind: {leaks}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    needs_root()
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server per module and store kind."""
    needs_root()
    url = None
    if request.param == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres")
        url = pg.create_database("stockade_" + os.urandom(4).hex())
    srv = Server(new_data_dir(), database_url=url).start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def sqlite_server() -> Iterator[Server]:
    """A server on the default store (SQLite), for tests that do not depend on the store."""
    needs_root()
    srv = Server(new_data_dir()).start()
    yield srv
    finish(srv)

"""The first-run path: ``stockade demo`` against the local daemon prints a dashboard link; a
browser (Debian's Chromium through Playwright) opens it, is signed in without any key, sees
the sandbox the demo left and types into its terminal. The daemon's dashboard port lets
nothing else through: no API call without the daemon's in-memory key, no terminal without a
signed-in page, no second use of a link."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import InvalidStatus

from browser import Browser, browser  # noqa: F401
from server_harness import STOCKADE, free_port, needs_root
from stockade.config import default_images_dir, local_socket
from stockade.engine.hostcheck import find_leaks

pytestmark = [pytest.mark.root, pytest.mark.slow]


class LocalDaemon:
    """``python -m stockade.server`` (what the SDK starts on demand), stopped by its pid."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="stockade-ui-local-", dir="/var/tmp"))
        self.port = free_port()
        self.env = {
            **os.environ,
            "STOCKADE_DATA_DIR": str(self.data_dir),
            "STOCKADE_IMAGES_DIR": str(default_images_dir()),
            "STOCKADE_POOL_SIZE": "0",
            "STOCKADE_DASHBOARD_PORT": str(self.port),
        }
        for name in ("STOCKADE_API_URL", "STOCKADE_API_KEY"):
            self.env.pop(name, None)
        log = open(self.data_dir / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stockade.server", "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + 60
        while not local_socket(self.data_dir).exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_tail()
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return (self.data_dir / "daemon.log").read_text(errors="replace")[-3000:]

    def socket_client(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(local_socket(self.data_dir))),
            base_url="http://stockade",
            timeout=60,
        )

    def cli(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [STOCKADE, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, done.stdout + done.stderr + self.log_tail()
        return done.stdout

    def finish(self) -> None:
        try:
            with self.socket_client() as c:
                for item in c.get("/sandboxes").json()["items"]:
                    c.delete(f"/sandboxes/{item['id']}")
        finally:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        leaks = find_leaks(self.data_dir)
        subprocess.run(["rm", "-rf", str(self.data_dir)], check=False)
        assert not leaks, f"the daemon left things behind: {leaks}"


@pytest.fixture(scope="module")
def daemon() -> Iterator[LocalDaemon]:
    needs_root()
    d = LocalDaemon()
    yield d
    d.finish()


@pytest.fixture(scope="module")
def demo(daemon: LocalDaemon) -> dict[str, str]:
    """What `stockade demo` printed: its link, and the sandbox it left running."""
    printed = daemon.cli("demo", "--isolation", "container")
    link = re.search(r"^Dashboard: (\S+)$", printed, re.M)
    kept = re.search(r"Sandbox (sb\w+) is left running", printed)
    assert link and kept, printed
    return {"link": link.group(1), "sandbox": kept.group(1)}


def test_demo_link_signs_in_and_drives_the_terminal(
    daemon: LocalDaemon, demo: dict[str, str], browser: Browser
) -> None:  # noqa: F811
    link = demo["link"]
    assert link.startswith(f"{daemon.url}/ui/login?token=")
    assert "sk_" not in link  # a one-time token, never a key
    page = browser.page()
    page.goto(link)
    page.click("text=Open the dashboard")
    page.wait_for_url(daemon.url + "/ui/")
    assert "local daemon" in page.inner_text("header")
    assert page.query_selector("nav a[href='/ui/keys']") is None  # no keys in local mode
    page.click(f"a[href='/ui/sandboxes/{demo['sandbox']}']")
    page.wait_for_selector("text=connected (pid")
    page.click("#terminal")
    page.keyboard.type("cat hello.txt; echo $((6*7))-typed\n")
    page.wait_for_function(
        """() => { const b = window.stockadeTerminal.buffer.active;
        for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true)
            .startsWith('42-typed')) return true; return false; }""",
        timeout=30000,
    )
    text = page.evaluate("""() => { const b = window.stockadeTerminal.buffer.active;
        const out = []; for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
        return out.join('\\n'); }""")
    assert "Left running by 'stockade demo'" in text, text

    again = browser.page()  # the link worked once
    again.goto(link)
    assert "expired or was used" in again.inner_text("main")
    assert again.query_selector("#link-sign-in") is None
    fresh = daemon.cli("dashboard").strip()  # a new one, from the unix socket's side
    assert fresh.startswith(f"{daemon.url}/ui/login?token=") and fresh != link
    again.goto(fresh)
    again.click("text=Open the dashboard")
    again.wait_for_url(daemon.url + "/ui/")
    assert demo["sandbox"] in again.inner_text("#sandboxes")


def test_the_dashboard_port_lets_nothing_else_through(daemon: LocalDaemon, demo: dict[str, str]) -> None:
    sid = demo["sandbox"]
    with httpx.Client(base_url=daemon.url, timeout=30) as tcp:
        for method, path in (
            ("GET", "/sandboxes"),
            ("POST", "/dashboard/links"),
            ("GET", f"/sandboxes/{sid}"),
            ("DELETE", f"/sandboxes/{sid}"),
            ("POST", "/mcp"),
            ("GET", "/e2b/sandboxes"),
            ("GET", f"/sandboxes/{sid}/files?path=/etc/passwd"),
        ):
            for headers in ({}, {"Authorization": "Bearer sk_local_guess"}):
                r = tcp.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert tcp.get("/ui/").headers.get("location", "").endswith("/ui/login")  # no session
        r = tcp.post("/ui/login", data={"token": "made-up"})
        assert r.status_code == 401 and "stockade dashboard" in r.text
    for query in ("", "?csrf=guess"):  # a terminal without a signed-in page
        with pytest.raises(InvalidStatus):
            ws_client.connect(
                f"ws://127.0.0.1:{daemon.port}/sandboxes/{sid}/pty{query}", origin=daemon.url, open_timeout=10
            )
    with daemon.socket_client() as c:  # the unix socket is unchanged, and the sandbox untouched
        assert c.get(f"/sandboxes/{sid}").json()["state"] == "running"

"""Screenshots of the dashboard's main pages into docs/images/ (run by scripts/screenshots)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from browser import Browser
from server_harness import Server, finish, new_data_dir

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def networked(server: Server, key: str, page) -> None:  # type: ignore[no-untyped-def]
    """A sandbox with an egress policy, a background job and a refused DNS question."""
    from stockade import Sandbox

    sb = Sandbox.create(timeout=600, network={"allow_out": ["pypi.org", "*.pythonhosted.org"],
                                              "deny_out": ["10.0.0.0/8"]},
                        metadata={"job": "scraper"}, api_url=server.url, api_key=key)
    job = sb.commands.run("while :; do date; sleep 2; done", background=True)
    sb.commands.run(["python3", "-c", "import socket\nfor n in ('api.example.com', "
                     "'telemetry.invalid'):\n    try: socket.getaddrinfo(n, 443)\n"
                     "    except OSError: pass"], timeout=60)
    page.goto(f"{server.url}/ui/sandboxes/{sb.id}")
    page.wait_for_selector("#egress tr.denied")
    page.wait_for_timeout(16000)  # a few usage samples
    page.screenshot(path=OUT / "dashboard-sandbox-network.png", full_page=True)
    job.disconnect()  # stop following it (the server kills the sandbox at the end)


def forked_and_ended(server: Server, key: str, page, source: str) -> None:  # type: ignore[no-untyped-def]
    """Fork from the page; one copy killed: its end record, and the list's recent ends."""
    from stockade import Sandbox

    page.goto(f"{server.url}/ui/sandboxes/{source}")
    page.fill("#fork input[name=count]", "2")
    page.click("#fork button")
    page.wait_for_selector("#forked")
    page.screenshot(path=OUT / "dashboard-fork.png")
    copy = page.eval_on_selector("#forked a", "a => a.textContent")
    page.goto(server.url + "/ui/")
    Sandbox.kill(copy, api_url=server.url, api_key=key)
    page.wait_for_selector(f"#ended-sandboxes tr[data-id='{copy}']")
    page.wait_for_timeout(1000)
    page.screenshot(path=OUT / "dashboard-sandboxes.png", full_page=True)
    page.goto(f"{server.url}/ui/sandboxes/{copy}")
    page.screenshot(path=OUT / "dashboard-ended.png", full_page=True)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("STOCKADE_USAGE_INTERVAL", "1")  # charts with some history at once
    server = Server(new_data_dir()).start()
    browser = Browser()
    try:
        key = server.new_key("acme")
        with server.client(key) as c:
            ids = [c.post("/sandboxes", json={"timeout": 600, "metadata": {"job": name}}).json()["id"]
                   for name in ("etl", "notebook")]
            link = c.post("/dashboard/links").json()["path"]
            c.put(f"/sandboxes/{ids[0]}/files", params={"path": "/home/user/report.csv"},
                  content=b"region,total\nnorth,42\nsouth,17\n")
            c.post(f"/sandboxes/{ids[1]}/pause")
        page = browser.page()
        page.goto(server.url + "/ui/login")
        page.screenshot(path=OUT / "dashboard-login.png")
        page.goto(server.url + link)  # what 'stockade dashboard' and 'stockade demo' print
        page.screenshot(path=OUT / "dashboard-link.png")
        page.click("text=Open the dashboard")
        page.wait_for_url(server.url + "/ui/")
        page.goto(f"{server.url}/ui/sandboxes/{ids[0]}")
        page.wait_for_selector("text=connected (pid")
        page.click("#terminal")
        page.keyboard.type("python3 -c 'import platform; print(platform.platform())'; ls -l; "
                           "timeout 8 sh -c 'while :; do :; done'\n")
        page.wait_for_timeout(14000)  # a few usage samples, the busy loop among them
        page.screenshot(path=OUT / "dashboard-sandbox.png", full_page=True)
        page.goto(f"{server.url}/ui/sandboxes/{ids[0]}/files?path=%2Fhome%2Fuser")
        page.screenshot(path=OUT / "dashboard-files.png", full_page=True)
        forked_and_ended(server, key, page, ids[0])
        networked(server, key, page)
        if browser.outside:
            print(f"pages asked for something outside loopback: {browser.outside}")
            return 1
    finally:
        browser.close()
        finish(server)
    print(f"wrote {', '.join(p.name for p in sorted(OUT.glob('dashboard-*.png')))} in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A sandbox's dashboard page, live, in Chromium against a real ``stockade serve``: network
policy and egress log, processes (follow one's output, kill it), snapshots, usage charts, a
state change seen without reloading, and a sandbox that ends while its page is open."""

from __future__ import annotations

import re
import secrets
from typing import Iterator

import pytest

from browser import Browser, browser  # noqa: F401
from server_harness import Server, sqlite_server  # noqa: F401
from stockade import Sandbox

pytestmark = [pytest.mark.root, pytest.mark.slow]
POLICY = {"allow_out": ["pypi.org"], "deny_out": ["10.0.0.0/8"]}
#: A DNS question for a name the policy does not allow: Stockade's resolver refuses it itself.
ASK = ("import socket\ntry:\n    socket.getaddrinfo('not-allowed.invalid', 443)\n"
       "except OSError as e:\n    print('refused', e)")


@pytest.fixture(scope="module")
def tenant(sqlite_server: Server) -> Iterator[tuple[str, str]]:  # noqa: F811
    name = f"detail-{secrets.token_hex(3)}"
    key = sqlite_server.new_key(name)
    yield name, key
    with sqlite_server.client(key) as c:
        c.post("/templates/prune")


def sign_in(page, server: Server, key: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(server.url + "/ui/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/ui/")


def test_detail_page_is_live(sqlite_server: Server, tenant: tuple[str, str],  # noqa: F811
                             browser: Browser) -> None:  # noqa: F811
    _, key = tenant
    sb = Sandbox.create(timeout=300, network=POLICY, api_url=sqlite_server.url, api_key=key)
    snapshot = f"snap-{secrets.token_hex(3)}"
    try:
        with sqlite_server.client(key) as c:
            assert c.post(f"/sandboxes/{sb.id}/snapshot", json={"name": snapshot}).status_code == 201
        page = browser.page()
        sign_in(page, sqlite_server, key)
        page.goto(f"{sqlite_server.url}/ui/sandboxes/{sb.id}")
        policy = page.inner_text("#network-policy")
        assert "pypi.org" in policy and "10.0.0.0/8" in policy
        assert snapshot in page.inner_text("#snapshots")  # the snapshot made from it
        page.goto(f"{sqlite_server.url}/ui/templates")  # which names where it came from
        assert page.get_attribute(f"#templates tr[data-name='{snapshot}'] a",
                                  "href") == f"/ui/sandboxes/{sb.id}"
        page.goto(f"{sqlite_server.url}/ui/sandboxes/{sb.id}")

        # A background process appears in the list by itself; its output can be followed.
        ticker = sb.commands.run("i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.5; done",
                                 background=True)
        page.wait_for_selector(f"#processes tr[data-pid='{ticker.pid}']", timeout=15000)
        follow = browser.page()
        follow.context.add_cookies(page.context.cookies())
        follow.goto(f"{sqlite_server.url}/ui/sandboxes/{sb.id}/processes/{ticker.pid}",
                    wait_until="commit")  # the page streams: it never finishes loading
        follow.wait_for_function("() => /tick-\\d+/.test(document.getElementById('output')"
                                 "?.textContent || '')", timeout=15000)

        # A refused DNS question shows in the egress log, newest first, without a reload.
        assert "refused" in sb.commands.run(["python3", "-c", ASK], timeout=60).stdout
        page.wait_for_selector("#egress tr.denied", timeout=15000)
        assert "not-allowed.invalid" in page.inner_text("#egress")

        # The usage charts have samples; killing the process from the page ends its stream.
        page.wait_for_function("() => +document.getElementById('charts').dataset.samples >= 2")
        assert page.eval_on_selector("#chart-pids", "s => s.parentElement.dataset.latest")
        page.click(f"#processes tr[data-pid='{ticker.pid}'] button.kill")
        page.wait_for_selector(f"text=killed process {ticker.pid}")
        follow.wait_for_selector("#process-end", timeout=15000)
        assert re.search(r"exited with code -?\d+", follow.inner_text("#process-end"))

        # A state change made elsewhere shows up; so does the sandbox's end.
        sb.pause()
        page.wait_for_selector("button.resume", timeout=15000)
        assert page.inner_text('[data-field="state"]') == "paused"
        sb.kill()
        page.wait_for_selector("#ended:not([hidden])", timeout=15000)
        assert "does not exist (or has ended)" in page.inner_text("#ended")
    finally:
        sb.kill()
        with sqlite_server.client(key) as c:
            c.delete(f"/templates/{snapshot}")

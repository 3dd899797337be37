"""A sandbox's dashboard page, live, in Chromium against a real ``stockade serve``: network
policy and egress log, processes (follow one's output, kill it), snapshots, usage charts from
the usage history, a state change seen without reloading, a sandbox that ends while its page is
open (its end record shown); fork from the page, refusals shown on the page, the list's recent
ends, and another tenant's fork refused."""

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
ASK = (
    "import socket\ntry:\n    socket.getaddrinfo('not-allowed.invalid', 443)\n"
    "except OSError as e:\n    print('refused', e)"
)


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


def test_detail_page_is_live(
    sqlite_server: Server,
    tenant: tuple[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
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
        assert (
            page.get_attribute(f"#templates tr[data-name='{snapshot}'] a", "href") == f"/ui/sandboxes/{sb.id}"
        )
        page.goto(f"{sqlite_server.url}/ui/sandboxes/{sb.id}")

        # A background process appears in the list by itself; its output can be followed.
        ticker = sb.commands.run(
            "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.5; done", background=True
        )
        page.wait_for_selector(f"#processes tr[data-pid='{ticker.pid}']", timeout=15000)
        follow = browser.page()
        follow.context.add_cookies(page.context.cookies())
        follow.goto(
            f"{sqlite_server.url}/ui/sandboxes/{sb.id}/processes/{ticker.pid}", wait_until="commit"
        )  # the page streams: it never finishes loading
        follow.wait_for_function(
            "() => /tick-\\d+/.test(document.getElementById('output')?.textContent || '')", timeout=15000
        )

        # A refused DNS question shows in the egress log, newest first, without a reload.
        assert "refused" in sb.commands.run(["python3", "-c", ASK], timeout=60).stdout
        page.wait_for_selector("#egress tr.denied", timeout=15000)
        assert "not-allowed.invalid" in page.inner_text("#egress")

        # The usage charts are drawn from the usage history, and grow as samples come.
        page.wait_for_function("() => +document.getElementById('charts').dataset.samples >= 2", timeout=30000)
        for name in ("cpu", "memory", "pids"):
            points = page.eval_on_selector(f"#chart-{name} polyline", "p => p.getAttribute('points')").split()
            assert len(points) >= 2 and all(len(p.split(",")) == 2 for p in points), points
            assert page.eval_on_selector(f"#chart-{name}", "s => s.parentElement.dataset.latest")
        with sqlite_server.client(key) as c:
            history = c.get(f"/sandboxes/{sb.id}/usage").json()["items"]
        page.reload()  # drawn on the server too: the whole history, at once
        assert int(page.get_attribute("#charts", "data-samples") or 0) >= len(history)
        # Killing the process from the page ends its stream.
        page.click(f"#processes tr[data-pid='{ticker.pid}'] button.kill")
        page.wait_for_selector(f"text=killed process {ticker.pid}")
        follow.wait_for_selector("#process-end", timeout=15000)
        assert re.search(r"exited with code -?\d+", follow.inner_text("#process-end"))

        # A state change made elsewhere shows up; so does the sandbox's end.
        sb.pause()
        page.wait_for_selector("button.resume", timeout=15000)
        assert page.inner_text('[data-field="state"]') == "paused"
        sb.kill()  # the page turns into the sandbox's end record: why and when it ended
        page.wait_for_selector("#ended[data-reason='killed']", timeout=15000)
        assert "killed by the user (killed)" in page.inner_text("#ended")
        assert page.inner_text('[data-field="state"]') == "ended"
        assert page.inner_text('[data-field="why"]') == "killed by the user"
        assert snapshot in page.inner_text("#snapshots")  # what was saved from it is still there
    finally:
        sb.kill()
        with sqlite_server.client(key) as c:
            c.delete(f"/templates/{snapshot}")


def test_fork_buttons_refusals_and_ends(
    sqlite_server: Server,
    tenant: tuple[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    _, key = tenant
    stranger = sqlite_server.new_key(f"stranger-{secrets.token_hex(3)}")
    sb = Sandbox.create(timeout=300, persistence="workspace", api_url=sqlite_server.url, api_key=key)
    copies: list[str] = []
    try:
        sb.files.write("/home/user/mark.txt", "from the source")
        page = browser.page()
        sign_in(page, sqlite_server, key)
        page.goto(f"{sqlite_server.url}/ui/sandboxes/{sb.id}")
        for button in ("pause", "stop", "kill"):  # what a running workspace offers
            assert page.query_selector(f".actions button.{button}") is not None, button
        assert page.query_selector("#fork button") and page.query_selector("#snapshot button")

        # Fork 2 copies, files only: the page lists them and says what came along.
        page.fill("#fork input[name=count]", "2")
        page.select_option("#fork select[name=memory]", "files")
        page.click("#fork button")
        forked = page.inner_text("#forked")
        assert "Forked 2 copies" in forked and "files only" in forked, forked
        copies = page.eval_on_selector_all("#forked a", "links => links.map(a => a.textContent)")
        assert len(copies) == 2 and page.get_attribute("#forked", "data-memory") == "0"
        for copy in copies:
            with sqlite_server.client(key) as c:
                r = c.get(f"/sandboxes/{copy}/files", params={"path": "/home/user/mark.txt"})
                assert r.text == "from the source"
        page.goto(f"{sqlite_server.url}/ui/")
        rows = set(
            page.eval_on_selector_all("#sandboxes tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
        )
        assert {sb.id, *copies} <= rows

        # Asking the container tier for memory: refused on the page, naming the capability.
        page.goto(f"{sqlite_server.url}/ui/sandboxes/{sb.id}")
        page.select_option("#fork select[name=memory]", "required")
        page.click("#fork button")
        refusal = page.inner_text(".message.failed")
        assert "fork of 1 refused" in refusal and "forks_memory" in refusal, refusal
        assert "HTTP 409" in refusal and "#forked" not in page.content()
        # Other refusals come back the same way: archiving a running workspace, saving as a
        # template under a name that is taken.
        csrf = page.get_attribute("#fork input[name=csrf]", "value") or ""
        for path, form, words in (
            ("archive", {}, "archive refused"),
            ("snapshot", {"name": "base"}, "saving as template base refused"),
        ):
            r = page.request.post(
                f"{sqlite_server.url}/ui/sandboxes/{sb.id}/{path}", form={"csrf": csrf, **form}
            )
            assert r.status == 200 and r.url.endswith(f"/ui/sandboxes/{sb.id}"), (path, r.url)
            assert words in r.text() and 'class="message failed"' in r.text(), r.text()[:2000]
            assert re.search(r"HTTP 4\d\d", r.text()), path

        # Another tenant's session cannot fork it (404, as if it did not exist), nor stop it.
        other = browser.page()
        sign_in(other, sqlite_server, stranger)
        other.goto(f"{sqlite_server.url}/ui/")
        csrf = other.get_attribute("#create input[name=csrf]", "value") or ""
        for action, form in (("fork", {"count": "3", "memory": "files"}), ("stop", {})):
            r = other.request.post(
                f"{sqlite_server.url}/ui/sandboxes/{sb.id}/{action}", form={"csrf": csrf, **form}
            )
            assert r.status == 404 and "does not exist" in r.text(), (action, r.status)
        with sqlite_server.client(key) as c:
            mine = {s["id"] for s in c.get("/sandboxes").json()["items"]}
            assert c.get(f"/sandboxes/{sb.id}").json()["state"] == "running"
        assert mine == {sb.id, *copies}  # no copy made

        # Stop and start from the page (a workspace): the buttons follow the state.
        page.click(".actions button.stop")
        assert "stop: done, now stopped" in page.inner_text(".message")
        assert (
            page.query_selector(".actions button.start")
            and page.query_selector(".actions button.archive")
            and page.query_selector("#fork") is None
        )
        page.click(".actions button.start")
        assert "start: done, now running" in page.inner_text(".message")

        # Copies killed elsewhere leave the list and show under "Recently ended", with why.
        page.goto(f"{sqlite_server.url}/ui/")
        for copy in copies:
            Sandbox.kill(copy, api_url=sqlite_server.url, api_key=key)
        for copy in copies:
            page.wait_for_selector(f"#ended-sandboxes tr[data-id='{copy}']", timeout=15000)
            assert "killed" in page.inner_text(f"#ended-sandboxes tr[data-id='{copy}'] .reason")
        page.wait_for_function(
            f"() => !document.querySelector(\"#sandboxes tr[data-id='{copies[0]}']\")", timeout=15000
        )
        other.goto(f"{sqlite_server.url}/ui/")  # another tenant sees none of these ends
        other.wait_for_timeout(1500)
        assert other.query_selector(f"#ended-sandboxes tr[data-id='{copies[0]}']") is None
        page.click(f"#ended-sandboxes a:text('{copies[0]}')")  # the end record's page
        assert "killed by the user (killed)" in page.inner_text("#ended")
        response = other.goto(f"{sqlite_server.url}/ui/sandboxes/{copies[0]}")
        assert response is not None and response.status == 404  # not the stranger's to read
    finally:
        for copy in copies:
            Sandbox.kill(copy, api_url=sqlite_server.url, api_key=key)
        sb.kill()

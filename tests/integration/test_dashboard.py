"""The dashboard at /ui in a real browser (Debian's Chromium through Playwright) against a
real ``stockade serve`` and real sandboxes: sign in, list, detail, terminal, files, kill,
tenancy, CSRF; no page loads anything from outside loopback."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Iterator

import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import InvalidStatus

from browser import Browser, browser  # noqa: F401
from server_harness import Server, sqlite_server  # noqa: F401

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(sqlite_server: Server) -> Iterator[dict[str, str]]:  # noqa: F811
    """Two tenants with one sandbox each. Tenant names are new each run: templates and their
    build cache live in the images directory, which outlives the server."""
    token = secrets.token_hex(3)
    world = {}
    for short in ("acme", "globex"):
        tenant = world[f"{short}_tenant"] = f"{short}-{token}"
        key = world[f"{short}_key"] = sqlite_server.new_key(tenant)
        with sqlite_server.client(key) as c:
            r = c.post("/sandboxes", json={"timeout": 600, "metadata": {"owner": tenant}})
            assert r.status_code == 201, r.text
            world[short] = r.json()["id"]
    yield world
    for short in ("acme", "globex"):  # what this run's builds left in the build cache
        with sqlite_server.client(world[f"{short}_key"]) as c:
            c.post("/templates/prune")


def sign_in(page, server: Server, key: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(server.url + "/ui/")
    assert page.url.endswith("/ui/login")  # not signed in: sent to the sign-in page
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/ui/")


def listed(page) -> set[str]:  # type: ignore[no-untyped-def]
    return set(
        page.eval_on_selector_all("#sandboxes tbody tr[data-id]", "rows => rows.map(r => r.dataset.id)")
    )


def alive(server: Server, sandbox_id: str) -> bool:
    with server.admin() as c:
        return c.get(f"/sandboxes/{sandbox_id}").status_code == 200


def terminal_text(page) -> str:  # type: ignore[no-untyped-def]
    return str(
        page.evaluate("""() => { const b = window.stockadeTerminal.buffer.active;
        const out = []; for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
        return out.join('\\n'); }""")
    )


def test_sign_in_terminal_files_and_kill(
    sqlite_server: Server,
    world: dict[str, str],  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:  # noqa: F811
    page = browser.page()
    sign_in(page, sqlite_server, world["acme_key"])
    assert f"tenant {world['acme_tenant']}" in page.inner_text("header")
    assert listed(page) == {world["acme"]}

    page.click(f"a[href='/ui/sandboxes/{world['acme']}']")
    page.wait_for_selector("text=connected (pid")
    assert "running" in page.inner_text("table.spec")
    assert page.query_selector("button.stop") is None  # ephemeral: nothing to stop and keep
    page.click("#terminal")
    page.keyboard.type("echo $((6*7))-from-xterm; whoami\n")
    page.wait_for_function(
        """() => { const b = window.stockadeTerminal.buffer.active;
        for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true)
            .startsWith('42-from-xterm')) return true; return false; }""",
        timeout=20000,
    )
    text = terminal_text(page)
    assert re.search(r"^42-from-xterm\s*\nuser\s*$", text, re.M), text
    # The usage charts follow the sandbox: a busy loop typed into the terminal shows as CPU.
    page.keyboard.type("timeout 20 sh -c 'while :; do :; done'\n")
    page.wait_for_function(
        """() => parseFloat(document.querySelector('#chart-cpu')
        .parentElement.dataset.latest) > 10""",
        timeout=30000,
    )
    memory = page.eval_on_selector("#chart-memory", "svg => svg.parentElement.dataset.latest")
    assert memory.endswith(" MiB") and float(memory.split()[0]) > 1, memory
    assert int(page.get_attribute("#charts", "data-samples") or 0) >= 2
    assert page.eval_on_selector("#chart-memory polyline", "p => p.getAttribute('points')")

    page.click("a.button:text('Files')")
    local = tmp_path / "grüße.txt"
    local.write_text("uploaded through the browser\n")
    page.set_input_files("#upload", str(local))
    page.click("form.card button[type=submit]")
    page.wait_for_selector("text=uploaded /home/user/grüße.txt")
    page.click("#files a:text('grüße')")
    assert page.inner_text("pre.file") == "uploaded through the browser\n"
    with page.expect_download() as download:
        page.click("a:text('download')")
    assert Path(download.value.path()).read_text() == "uploaded through the browser\n"
    assert download.value.suggested_filename == "grüße.txt"
    with sqlite_server.client(world["acme_key"]) as c:  # really in the sandbox
        r = c.get(f"/sandboxes/{world['acme']}/files", params={"path": "/home/user/grüße.txt"})
        assert r.text == "uploaded through the browser\n"

    page.goto(f"{sqlite_server.url}/ui/sandboxes/{world['acme']}")
    page.click("button.kill")
    page.wait_for_url(sqlite_server.url + "/ui/")
    assert f"killed {world['acme']}" in page.inner_text(".message")
    assert world["acme"] not in listed(page)
    assert not alive(sqlite_server, world["acme"])


def test_tenant_sees_only_its_rows(
    sqlite_server: Server,
    world: dict[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    page = browser.page()
    sign_in(page, sqlite_server, world["globex_key"])
    assert listed(page) == {world["globex"]}
    response = page.goto(f"{sqlite_server.url}/ui/sandboxes/{world['globex']}x")
    assert response is not None and response.status == 404
    with sqlite_server.client(world["acme_key"]) as c:  # a fresh acme sandbox, then probe it
        other = c.post("/sandboxes", json={"timeout": 300}).json()["id"]
    for path in (f"/ui/sandboxes/{other}", f"/ui/sandboxes/{other}/files"):
        response = page.goto(sqlite_server.url + path)
        assert response is not None and response.status == 404, path
        assert "does not exist" in page.inner_text(".message")
    page.goto(sqlite_server.url + "/ui/?state=running")
    assert other not in listed(page)

    page.goto(sqlite_server.url + "/ui/")  # create one through the form, on gVisor
    page.fill("#new-timeout", "300")
    page.select_option("#new-tier", "gvisor")
    page.click("#create button[type=submit]")
    page.wait_for_selector("text=connected (pid")
    made = page.url.rsplit("/", 1)[-1]
    assert f"created {made}" in page.inner_text(".message")
    with sqlite_server.client(world["globex_key"]) as c:
        info = c.get(f"/sandboxes/{made}").json()
        assert info["metadata"] == {"created-by": "dashboard"} and info["timeout"] == 300
        assert info["isolation"] == "gvisor"
    page.click("#terminal")  # the terminal works on gVisor too
    page.keyboard.type("echo gvisor-$((7*6)); uname -r\n")
    page.wait_for_function(
        """() => { const b = window.stockadeTerminal.buffer.active;
        for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true)
            .startsWith('gvisor-42')) return true; return false; }""",
        timeout=30000,
    )
    bad = page.request.post(
        sqlite_server.url + "/ui/sandboxes",
        form={
            "csrf": page.get_attribute("#terminal", "data-csrf") or "",
            "template": "../etc",
            "tier": "container",
            "timeout": "1e9",
        },
    )
    assert bad.status == 400 and "give a template name" in bad.text()

    admin = browser.page()
    sign_in(admin, sqlite_server, sqlite_server.admin_key or "")
    assert "admin: every tenant" in admin.inner_text("header")
    assert {other, world["globex"]} <= listed(admin)
    admin.goto(sqlite_server.url + "/ui/?tier=gvisor")
    assert listed(admin) == {made}
    admin.goto(sqlite_server.url + "/ui/?tier=container")
    assert made not in listed(admin) and {other, world["globex"]} <= listed(admin)
    admin.goto(sqlite_server.url + "/ui/?template=base&state=running")
    assert {other, world["globex"]} <= listed(admin)
    with sqlite_server.client(world["acme_key"]) as c:
        c.delete(f"/sandboxes/{other}")
    with sqlite_server.client(world["globex_key"]) as c:
        c.delete(f"/sandboxes/{made}")


def test_forged_requests_are_refused(
    sqlite_server: Server,
    world: dict[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    page = browser.page()
    page.goto(sqlite_server.url + "/ui/login")
    page.fill("#key", "sk_000000000000_" + "z" * 43)
    page.click("button[type=submit]")
    assert "invalid, revoked or expired" in page.inner_text(".message")

    sign_in(page, sqlite_server, world["globex_key"])
    target = world["globex"]
    # A form post without the session's CSRF token (what another site could send): refused.
    r = page.request.post(f"{sqlite_server.url}/ui/sandboxes/{target}/kill", form={"csrf": "forged"})
    assert r.status == 403 and alive(sqlite_server, target)
    # The cookie alone opens nothing on the API: the REST routes still want a key.
    r = page.request.get(f"{sqlite_server.url}/sandboxes")
    assert r.status == 401
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
    page.goto(f"{sqlite_server.url}/ui/sandboxes/{target}")
    csrf = page.get_attribute("#terminal", "data-csrf")
    url = sqlite_server.url.replace("http", "ws") + f"/sandboxes/{target}/pty"
    for origin, token in (
        ("http://evil.example", csrf),
        (sqlite_server.url, "forged"),
        (sqlite_server.url, None),
    ):
        query = f"?csrf={token}" if token else ""
        with pytest.raises(InvalidStatus):
            ws_client.connect(
                url + query,
                origin=origin,  # type: ignore[arg-type]
                additional_headers={"Cookie": cookie},
            ).close()
    with ws_client.connect(
        f"{url}?csrf={csrf}",
        origin=sqlite_server.url,  # type: ignore[arg-type]
        additional_headers={"Cookie": cookie},
    ) as ws:
        assert json.loads(ws.recv())["type"] == "start"  # the same, from our own page: works
    # Signing out ends the session for the terminal too.
    page.click("header button")
    page.wait_for_url(re.compile(r"/ui/login$"))
    with pytest.raises(InvalidStatus):
        ws_client.connect(
            f"{url}?csrf={csrf}",
            origin=sqlite_server.url,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
        ).close()
    assert alive(sqlite_server, target)


def test_pause_and_resume_buttons(
    sqlite_server: Server,
    world: dict[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    page = browser.page()
    sign_in(page, sqlite_server, world["globex_key"])
    page.fill("#new-template", "typing-survives")  # the list updates without a reload
    with sqlite_server.client(world["globex_key"]) as c:
        fresh = c.post("/sandboxes", json={"timeout": 120}).json()["id"]
    page.wait_for_selector(f"#sandboxes tr[data-id='{fresh}']", timeout=25000)
    assert page.input_value("#new-template") == "typing-survives"
    with sqlite_server.client(world["globex_key"]) as c:
        c.delete(f"/sandboxes/{fresh}")
    page.goto(f"{sqlite_server.url}/ui/sandboxes/{world['globex']}")
    page.click("button.pause")
    assert "pause: done, now paused" in page.inner_text(".message")
    with sqlite_server.client(world["globex_key"]) as c:
        assert c.get(f"/sandboxes/{world['globex']}").json()["state"] == "paused"
    assert page.query_selector("#terminal") is None  # no terminal into a paused sandbox
    page.goto(f"{sqlite_server.url}/ui/?state=paused")
    assert listed(page) == {world["globex"]}
    page.goto(f"{sqlite_server.url}/ui/sandboxes/{world['globex']}")
    page.click("button.resume")
    assert "resume: done, now running" in page.inner_text(".message")
    page.wait_for_selector("text=connected (pid")
    page.reload()
    assert page.query_selector(".message") is None  # a note is shown once


def test_revoked_key_signs_the_browser_out(
    sqlite_server: Server,  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    key = sqlite_server.new_key("initech")
    page = browser.page()
    sign_in(page, sqlite_server, key)
    with sqlite_server.admin() as c:
        assert c.delete("/keys/" + "_".join(key.split("_")[:2])).status_code == 200
    response = page.goto(sqlite_server.url + "/ui/")
    assert response is not None and response.status == 401
    assert "invalid, revoked or expired" in page.inner_text(".message")
    page.goto(sqlite_server.url + "/ui/")
    assert page.url.endswith("/ui/login")


def test_keys_audit_and_templates(
    sqlite_server: Server,
    world: dict[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    admin = browser.page()
    sign_in(admin, sqlite_server, sqlite_server.admin_key or "")
    admin.click("header a:text('Keys')")
    admin.fill("#key-tenant", "hooli")
    admin.fill("#key-name", "ci")
    admin.click("#new-key button[type=submit]")
    secret = admin.inner_text("#secret").strip()
    key_id = "_".join(secret.split("_")[:2])
    assert secret.startswith("sk_") and "shown only this once" in admin.inner_text("main")
    hooli = browser.page()
    sign_in(hooli, sqlite_server, secret)
    assert "tenant hooli" in hooli.inner_text("header")
    hooli.goto(sqlite_server.url + "/ui/keys")  # a tenant sees its own keys only
    assert {r.split("\t")[1] for r in hooli.inner_text("#keys tbody").splitlines()} == {"hooli"}
    assert hooli.query_selector("#key-tenant") is None

    admin.goto(sqlite_server.url + "/ui/keys")
    admin.click(f"#keys tr[data-id='{key_id}'] button.kill")
    assert f"revoked {key_id}" in admin.inner_text(".message")
    assert "revoked" in admin.inner_text(f"#keys tr[data-id='{key_id}']")
    response = hooli.goto(sqlite_server.url + "/ui/")
    assert response is not None and response.status == 401
    admin.click("header a:text('Audit')")
    log = admin.inner_text("#audit")
    assert re.search(rf"hooli\s+admin\s+key\.revoke\s+{key_id}", log), log
    assert re.search(rf"hooli\s+admin\s+key\.create\s+{key_id}", log)

    page = browser.page()
    sign_in(page, sqlite_server, world["globex_key"])
    page.goto(f"{sqlite_server.url}/ui/sandboxes/{world['globex']}")
    snap = f"snap-{secrets.token_hex(4)}"  # templates outlive the server
    page.fill("#snapshot input[name=name]", snap)
    page.click("#snapshot button")
    assert f"saved {world['globex']} as template {snap}" in page.inner_text(".message")
    assert world["globex_tenant"] in page.inner_text(f"#templates tr[data-name='{snap}']")
    assert page.query_selector("#templates tr[data-name='base'] button") is None  # shared
    other = browser.page()
    sign_in(other, sqlite_server, world["acme_key"])
    other.goto(sqlite_server.url + "/ui/templates")
    assert other.query_selector(f"#templates tr[data-name='{snap}']") is None
    assert other.query_selector("#templates tr[data-name='base']") is not None
    page.click(f"#templates tr[data-name='{snap}'] button.kill")
    assert f"deleted template {snap}" in page.inner_text(".message")
    assert page.query_selector(f"#templates tr[data-name='{snap}']") is None


def test_build_a_template_and_watch_its_log(
    sqlite_server: Server,
    world: dict[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    token = secrets.token_hex(4)  # templates and the build cache outlive the server
    built, broken = f"built-{token}", f"broken-{token}"
    page = browser.page()
    sign_in(page, sqlite_server, world["globex_key"])
    try:
        page.goto(sqlite_server.url + "/ui/templates")
        page.fill("#build-name", built)
        page.fill(
            "#build-dockerfile",
            "FROM base\nENV GREETING=hello\n"
            f"RUN echo first-$((6*7)); sleep 4; echo second-$GREETING {token}\n",
        )
        page.click("#build button[type=submit]", no_wait_after=True)
        page.wait_for_selector("#build-log:has-text('first-42'), #build-result", timeout=60000)
        assert page.query_selector("#build-result") is None, page.inner_text("main")  # live
        page.wait_for_selector("#build-result", timeout=120000)
        log = page.inner_text("#build-log")
        assert "second-hello" in log and "[3/3] RUN" in log and ": built" in log, log
        assert f"built template {built}" in page.inner_text("#build-result")
        with sqlite_server.client(world["globex_key"]) as c:
            assert c.get(f"/templates/{built}").json()["owner"] == world["globex_tenant"]

        page.goto(sqlite_server.url + "/ui/templates")
        page.fill("#build-name", broken)
        page.fill("#build-dockerfile", f"FROM base\nRUN echo about to fail {token}; exit 3\n")
        page.click("#build button[type=submit]", no_wait_after=True)
        page.wait_for_selector("#build-result.failed", timeout=120000)
        assert "about to fail" in page.inner_text("#build-log")
        assert "exit code 3" in page.inner_text("#build-result")
        page.goto(sqlite_server.url + "/ui/templates")
        assert page.query_selector(f"#templates tr[data-name='{broken}']") is None
        page.click(f"#templates tr[data-name='{built}'] button.kill")
        assert f"deleted template {built}" in page.inner_text(".message")
    finally:
        with sqlite_server.client(world["globex_key"]) as c:
            c.delete(f"/templates/{built}")


def test_volumes_and_tenant_quotas(
    sqlite_server: Server,
    world: dict[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    volume = f"vol-{secrets.token_hex(3)}"
    page = browser.page()
    sign_in(page, sqlite_server, world["globex_key"])
    page.click("header a:text('Volumes')")
    page.fill("#volume-name", volume)
    page.fill("#volume-size", "64")
    page.click("#new-volume button[type=submit]")
    assert f"created volume {volume} (64 MiB)" in page.inner_text(".message")
    assert world["globex_tenant"] in page.inner_text(f"#volumes tr[data-name='{volume}']")
    other = browser.page()
    sign_in(other, sqlite_server, world["acme_key"])
    other.goto(sqlite_server.url + "/ui/volumes")
    assert other.query_selector(f"#volumes tr[data-name='{volume}']") is None
    page.click(f"#volumes tr[data-name='{volume}'] button.kill")
    assert f"deleted volume {volume}" in page.inner_text(".message")

    assert page.query_selector("header a:text('Tenants')") is None  # admin only
    response = page.goto(sqlite_server.url + "/ui/tenants")
    assert response is not None and response.status in (403, 404)

    admin = browser.page()
    sign_in(admin, sqlite_server, sqlite_server.admin_key or "")
    admin.click("header a:text('Tenants')")
    row = f"#tenants tr[data-name='{world['globex_tenant']}']"
    admin.fill(f"{row} input[name=max_sandboxes]", "1")  # globex already has one
    admin.click(f"{row} button")
    assert f"updated {world['globex_tenant']}: max_sandboxes=1" in admin.inner_text(".message")
    page.goto(sqlite_server.url + "/ui/")
    page.click("#create button[type=submit]")
    assert page.inner_text("h1") == "Error 429" and "quota" in page.inner_text(".message")
    admin.goto(sqlite_server.url + "/ui/tenants")
    admin.fill(f"{row} input[name=max_sandboxes]", "100")
    admin.click(f"{row} button")
    assert "max_sandboxes=100" in admin.inner_text(".message")


def test_garbage_input_gets_clear_4xx_pages(
    sqlite_server: Server,
    world: dict[str, str],  # noqa: F811
    browser: Browser,
) -> None:  # noqa: F811
    page = browser.page()
    sign_in(page, sqlite_server, world["globex_key"])
    page.goto(f"{sqlite_server.url}/ui/sandboxes/{world['globex']}")
    csrf = page.get_attribute("#terminal", "data-csrf") or ""
    sid, url = world["globex"], sqlite_server.url
    gets = [
        (f"/ui/sandboxes/{'x' * 300}", 404),
        ("/ui/sandboxes/a%00b", 404),
        (f"/ui/sandboxes/{sid}/files?path=relative", 400),
        (f"/ui/sandboxes/{sid}/files?path=/no/such/dir", 404),
        (f"/ui/sandboxes/{sid}/files/view?path=/no/such/file", 404),
        (f"/ui/sandboxes/{sid}/files/download?path=/etc/shadow", 403),
        ("/ui/?state=exploded", 400),
        ("/ui/?tier=../../x", 400),
        ("/ui/events?since=-1", 400),
        ("/ui/events?since=" + "9" * 30, 400),
    ]
    for path, status in gets:
        r = page.request.get(url + path)
        assert r.status == status, (path, r.status, r.text()[:300])
        assert "<h1>Error" in r.text()
    posts = [
        ("/ui/sandboxes", {"template": "base", "tier": "container", "timeout": "soon"}),
        ("/ui/keys", {"expires_days": "-1"}),
        ("/ui/keys", {"expires_days": "lots"}),
        ("/ui/volumes", {"name": "UPPER", "size_mb": "64"}),
        ("/ui/volumes", {"name": "ok-name", "size_mb": "1e99"}),
        ("/ui/templates/build", {"name": "x", "dockerfile": ""}),
        ("/ui/templates/build", {"name": "../x", "dockerfile": "FROM base"}),
        (f"/ui/sandboxes/{sid}/snapshot", {"name": ""}),
        (f"/ui/sandboxes/{sid}/explode", {}),
        ("/ui/keys/not-a-key/revoke", {}),
        (f"/ui/sandboxes/{sid}/fork", {"count": "0"}),
        (f"/ui/sandboxes/{sid}/fork", {"count": "17"}),
        (f"/ui/sandboxes/{sid}/fork", {"count": "two"}),
        (f"/ui/sandboxes/{sid}/fork", {"count": "1", "memory": "maybe"}),
        (f"/ui/sandboxes/{sid}/files/upload?path=/home/user", {}),
    ]
    for path, form in posts:
        r = page.request.post(url + path, form={"csrf": csrf, **form})
        assert 400 <= r.status < 500, (path, form, r.status, r.text()[:300])
        assert "<h1>Error" in r.text(), (path, r.text()[:300])
    r = page.request.post(
        f"{url}/ui/sandboxes/{sid}/files/upload?path=/home/user",
        multipart={"csrf": csrf, "file": {"name": "..", "mimeType": "text/plain", "buffer": b"x"}},
    )
    assert r.status == 400 and "cannot upload a file named" in r.text()
    with sqlite_server.client(world["globex_key"]) as c:
        assert c.get(f"/sandboxes/{sid}").json()["state"] == "running"  # nothing broke
    assert page.request.get(url + "/health").ok

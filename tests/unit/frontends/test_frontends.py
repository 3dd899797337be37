"""The MCP server and the dashboard are front ends over the SDK: they never import the server,
the engine or the runtimes; and their small pure parts (sessions, CSRF, loopback, rendering)
behave."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest

from stockade.loopback import loopback_url
from stockade.mcp import render
from stockade.sdk import CommandResult, Execution, ExecutionError, Result
from stockade.sdk import ProcessInfo
from stockade.ui import detail_page, pages, sessions
from stockade.ui.sessions import Sessions, cookie_value, csrf_ok


def test_front_ends_import_only_the_sdk() -> None:
    code = (
        "import json, sys\n"
        "import stockade.mcp, stockade.mcp.http, stockade.mcp.stdio, stockade.ui\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[:2] in (\n"
        "    ['stockade', 'server'], ['stockade', 'engine'], ['stockade', 'runtimes'],\n"
        "    ['stockade', 'images'], ['stockade', 'agent']))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out) == []


def test_the_server_loads_the_mcp_package_only_when_mcp_is_used() -> None:
    code = "import sys, stockade.server.app; print('mcp' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "False"


def test_sessions_expire_and_close() -> None:
    store = Sessions()
    sid, session = store.open("sk_key", "acme", admin=False)
    assert store.get(sid) is session and store.get("other") is None and store.get(None) is None
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, "x") and not csrf_ok(session, None)
    store.close(sid)
    assert store.get(sid) is None
    sid, _ = store.open("sk_key", "acme", admin=False)
    store._by_id[sid] = sessions.Session("sk_key", "acme", False, expires=time.time() - 1)
    assert store.get(sid) is None


def test_sessions_are_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    store = Sessions()
    ids = [store.open(f"k{i}", "t", False)[0] for i in range(5)]
    assert len(store._by_id) == 3 and store.get(ids[-1]) is not None and store.get(ids[0]) is None


def test_cookie_value_finds_only_the_session_cookie() -> None:
    headers = [(b"cookie", b"a=1; stockade_ui=abc; b=2"), (b"host", b"x")]
    assert cookie_value(headers) == "abc"
    assert cookie_value([(b"cookie", b"stockade_uix=1; stockade_ui=")]) is None


def test_loopback_uses_the_socket_not_the_host_header() -> None:
    scope = {"server": ("127.0.0.1", 8800), "scheme": "http", "headers": [(b"host", b"evil.example")]}
    assert loopback_url(scope) == "http://127.0.0.1:8800"
    # behind a TLS proxy the scheme is the proxy's; the socket itself is plain HTTP
    assert loopback_url({"server": ("::1", 9), "scheme": "https"}) == "http://[::1]:9"
    assert loopback_url({"server": ("/run/stockade.sock", None)}) is None
    assert loopback_url({}) is None


def test_sign_in_links_work_once_and_expire(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store = Sessions()
    token, expires = store.link("sk_key", "acme", admin=False)
    assert expires - time.time() == pytest.approx(sessions.LINK_LIFETIME, abs=5)
    assert store.peek_link(token) is not None and store.peek_link(token) is not None  # no use
    sid, session = store.redeem(token) or ("", None)
    assert session is not None and session.key == "sk_key" and store.get(sid) is session
    assert session.csrf != token
    assert store.redeem(token) is None and store.peek_link(token) is None  # once
    late, _ = store.link("sk_key", "acme", admin=False)
    monkeypatch.setattr(time, "time", lambda: expires + sessions.LINK_LIFETIME)
    assert store.peek_link(late) is None and store.redeem(late) is None  # expired
    monkeypatch.undo()
    monkeypatch.setattr(sessions, "MAX_LINKS", 3)
    tokens = [store.link("k", "t", False)[0] for _ in range(5)]
    assert len(store._links) <= 3 and store.peek_link(tokens[-1]) and not store.peek_link(tokens[0])


def test_detail_rows_escape_what_the_sandbox_controls() -> None:
    _, session = Sessions().open("k", "t", admin=False)
    rows = detail_page.egress_rows(
        [{"time": 1, "kind": "dns", "name": "<img src=x>", "verdict": "denied", "reason": "<b>r</b>"}]
    )
    assert "<img" not in rows and "&lt;img src=x&gt;" in rows and "&lt;b&gt;" in rows
    procs = detail_page.process_rows(session, "sb1", [ProcessInfo(pid=7, cmd="</td><script>", tag='"x')])
    assert "<script>" not in procs and "&quot;x" in procs


def test_pages_escape_everything_they_show() -> None:
    store = Sessions()
    _, session = store.open("k", "<script>t</script>", admin=False)
    html = pages.login('"><img src=x onerror=alert(1)>')
    assert "<img" not in html and "&lt;img" in html
    body = pages.error(session, 404, "<b>no</b>")
    assert "<script>t</script>" not in body and "&lt;b&gt;no&lt;/b&gt;" in body


def test_download_names_cannot_break_the_header() -> None:
    from stockade.ui.routes import attachment

    value = attachment('/home/user/a "b"\r\nSet-Cookie: x=1 grüße.txt')
    value.encode("latin-1")  # a header Starlette can send
    assert "\r" not in value and "\n" not in value
    assert value.startswith('attachment; filename="a _b___Set-Cookie: x=1 gr__e.txt"')
    assert value.endswith("filename*=UTF-8''a%20%22b%22%0D%0ASet-Cookie%3A%20x%3D1%20gr%C3%BC%C3%9Fe.txt")


def test_execution_renders_images_as_image_content() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()
    run = Execution(results=[Result(png=png, text="<Figure>"), Result(text="42", is_main_result=True)])
    run.logs.stdout.append("hi\n")
    out = render.execution(run, "sb1")
    kinds = [b.type for b in out.content]
    assert kinds == ["text", "text", "image", "text"] and not out.is_error
    assert out.content[2].data == png and out.content[2].mime_type == "image/png"
    run.error = ExecutionError("ZeroDivisionError", "division by zero", "Traceback ...")
    assert render.execution(run, None).is_error


def test_long_output_is_clipped_with_a_note() -> None:
    result = render.command(CommandResult("x" * (render.MAX_TEXT + 10), "", 0), None)
    text = result.content[1].text
    assert text.endswith("[... 10 more characters cut]") and not result.is_error


def test_charts_place_the_history_newest_at_the_right() -> None:
    from stockade.models import UsageHistory, UsageSample
    from stockade.ui import charts

    def sample(t: float, cpu: float, mib: int, pids: int) -> UsageSample:
        return UsageSample(
            time=t,
            cpu_percent=cpu,
            cpu_seconds=t,
            memory_bytes=mib << 20,
            memory_limit_bytes=512 << 20,
            pids=pids,
        )

    assert charts.series(None)["cpu"] == {"points": "", "latest": "", "top": "", "samples": 0}
    young = charts.series(UsageHistory(interval=5, items=[sample(100, 0, 8, 2), sample(105, 50, 10, 4)]))
    first, last = (tuple(map(float, p.split(","))) for p in young["cpu"]["points"].split())
    assert last[0] == charts.WIDTH and first[0] == pytest.approx(charts.WIDTH * 50 / 55, abs=0.1)
    assert last[1] < first[1] == charts.HEIGHT  # higher value, higher on the chart (y down)
    assert young["memory"]["latest"] == "10.0 MiB" and young["pids"]["latest"] == "4"
    full = charts.series(UsageHistory(interval=1, items=[sample(t, t % 7, 8, 3) for t in range(120)]))
    xs = [float(p.split(",")[0]) for p in full["cpu"]["points"].split()]
    assert xs[0] == 0 and xs[-1] == charts.WIDTH and full["cpu"]["samples"] == 120
    assert 'id="chart-pids"' in charts.charts(None)  # an empty chart until samples come


def test_a_refusal_note_is_marked_failed() -> None:
    store = Sessions()
    session_id, _ = store.open("sk_x", "acme", False)
    store.note(session_id, "fork of 1 refused: ... [unsupported, HTTP 409]", failed=True)
    note = store.take_note(session_id)
    assert note.failed and 'class="message failed"' in pages.layout("t", "", message=note)
    store.note(session_id, "paused")
    assert 'class="message"' in pages.layout("t", "", message=store.take_note(session_id))
    assert store.take_note(session_id) == "" and not store.take_note(session_id).failed

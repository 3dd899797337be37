"""Fork, auto-pause with auto-resume, end reasons and secrets through the unmodified PyPI
``e2b`` SDK against a real Stockade server (docs/compat-e2b.md)."""

from __future__ import annotations

import os
import time
from typing import Iterator

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox, SandboxState
from e2b.exceptions import (
    RateLimitException,
    SandboxException,
    SandboxNotFoundException,
    SandboxNotRunningException,
    SandboxUnreachableException,
)
from server_harness import Server, finish, needs_root, new_data_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]
SECRET_VALUE = "sk-e2b-" + os.urandom(12).hex()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    needs_root()
    srv = Server(new_data_dir()).start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def keys(server: Server) -> Iterator[dict[str, str]]:
    """One key per tenant; the E2B variables point the SDK at the server as tenant A."""
    found = {"a": server.new_key("life-a"), "b": server.new_key("life-b")}
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(
        E2B_API_URL=server.url + "/e2b", E2B_SANDBOX_URL=server.url + "/e2b", E2B_API_KEY=found["a"]
    )
    yield found
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def raw(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/e2b", timeout=60, headers={"X-API-Key": key})


def _until(what, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
    return found


def test_fork_copies_files_and_applies_the_timeout(keys: dict[str, str], server: Server) -> None:
    """Container tier: each copy is a running sandbox with the source's files, its own from
    then on, living E2B's ``timeout``; the source carries on."""
    sb = Sandbox.create(timeout=300)
    copies: list[Sandbox] = []
    try:
        sb.files.write("/home/user/state.txt", "before the fork")
        result = sb.fork(count=2, timeout=120)
        assert all(isinstance(c, Sandbox) for c in result), result
        copies = [c for c in result if isinstance(c, Sandbox)]
        assert len({c.sandbox_id for c in copies} | {sb.sandbox_id}) == 3
        for i, copy in enumerate(copies):
            assert copy.files.read("/home/user/state.txt") == "before the fork"
            copy.files.write("/home/user/state.txt", f"copy {i}")
            info = copy.get_info()
            assert info.state == SandboxState.RUNNING
            assert 100 < (info.end_at - info.started_at).total_seconds() <= 125
        assert [c.files.read("/home/user/state.txt") for c in copies] == ["copy 0", "copy 1"]
        assert sb.files.read("/home/user/state.txt") == "before the fork"
        assert sb.commands.run("echo source").stdout == "source\n"
        # the class form, with E2B's default lifetime for copies (15 s)
        (alone,) = Sandbox.fork(sb.sandbox_id)
        assert isinstance(alone, Sandbox)
        copies.append(alone)
        info = alone.get_info()
        assert (info.end_at - info.started_at).total_seconds() <= 20
        # another tenant cannot fork it; more copies than Stockade makes at once: 400
        with pytest.raises(SandboxNotFoundException):
            Sandbox.fork(sb.sandbox_id, api_key=keys["b"])
        with pytest.raises(SandboxException, match="400: count"):
            sb.fork(count=17)
        with raw(server, keys["a"]) as c:
            r = c.post(f"/sandboxes/{sb.sandbox_id}/fork", json={"count": "2"})
            assert r.status_code == 400 and "count" in r.json()["message"]
    finally:
        for copy in copies:
            copy.kill()
        sb.kill()
    # a killed sandbox cannot be forked; the SDK's exception says why it is gone
    with pytest.raises(SandboxNotFoundException, match="killed by the user"):
        Sandbox.fork(sb.sandbox_id)


def test_fork_on_gvisor_keeps_running_processes(keys: dict[str, str]) -> None:
    """gVisor copies memory: a process started before the fork runs on in the copy."""
    sb = Sandbox.create(metadata={"stockade.isolation": "gvisor"}, timeout=300)
    copies: list[Sandbox] = []
    try:
        sb.commands.run(
            "python3 -c \"import time\nwhile True:\n    open('/tmp/beat', 'a').write('.'); time.sleep(0.2)\"",
            background=True,
        )
        _until(lambda: sb.files.exists("/tmp/beat"))
        result = sb.fork(count=1, timeout=120)
        copies = [c for c in result if isinstance(c, Sandbox)]
        assert len(copies) == 1, result
        copy = copies[0]
        first = len(copy.files.read("/tmp/beat"))
        _until(lambda: len(copy.files.read("/tmp/beat")) > first + 2)  # still beating
        assert any("beat" in p.cmd for p in copy.commands.list())
        assert sb.commands.run("echo source").stdout == "source\n"
    finally:
        for copy in copies:
            copy.kill()
        sb.kill()


def test_fork_counts_against_the_quota(keys: dict[str, str], server: Server) -> None:
    """Copies are sandboxes of the tenant: forking past ``max_sandboxes`` is a 429
    (RateLimitException) and makes nothing."""
    with server.admin() as admin:
        assert admin.post("/tenants", json={"name": "life-small", "max_sandboxes": 2}).status_code == 201
    key = server.new_key("life-small")
    sb = Sandbox.create(timeout=120, api_key=key)
    try:
        with pytest.raises(RateLimitException, match="sandboxes"):
            sb.fork(count=2)
        listed = Sandbox.list(api_key=key).next_items()
        assert [s.sandbox_id for s in listed] == [sb.sandbox_id]
        (copy,) = sb.fork()  # one more fits
        assert isinstance(copy, Sandbox)
        copy.kill()
    finally:
        sb.kill()


def test_auto_pause_then_auto_resume(keys: dict[str, str], server: Server) -> None:
    """``lifecycle={"on_timeout": "pause", "auto_resume": True}``: the timeout pauses the
    sandbox; the next command (or file read) resumes it with its files; without
    auto_resume a paused sandbox is not woken."""
    sb = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    plain = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause"})
    try:
        assert sb.get_info().lifecycle == {"on_timeout": "pause", "auto_resume": True}
        assert plain.get_info().lifecycle == {"on_timeout": "pause", "auto_resume": False}
        sb.files.write("/home/user/kept.txt", "kept")
        sb.set_timeout(3)

        def paused() -> bool:
            return sb.get_info().state == SandboxState.PAUSED

        _until(paused)
        assert paused()  # reading its info does not wake it
        assert sb.commands.run("cat /home/user/kept.txt").stdout == "kept"  # woken
        _until(paused)  # its 3 s timeout counts again from the wake: paused again
        assert sb.files.read("/home/user/kept.txt") == "kept"  # a file read wakes it too
        _until(paused)
        # a caller without the sandbox's token does not wake it
        with raw(server, keys["a"]) as c:
            for token in (None, plain._envd_access_token):
                headers = {
                    "E2b-Sandbox-Id": sb.sandbox_id,
                    "E2b-Sandbox-Port": "49983",
                    **({"X-Access-Token": token} if token else {}),
                }
                r = c.post("/process.Process/List", json={}, headers=headers)
                assert r.status_code == 401, r.text
        assert paused()
        # without auto_resume: paused stays paused, and the SDK is told why
        plain.pause()
        with pytest.raises(SandboxNotRunningException, match="paused"):
            plain.commands.run("true")
        assert plain.get_info().state == SandboxState.PAUSED
    finally:
        sb.kill()
        plain.kill()


def test_end_reasons_reach_the_sdk(keys: dict[str, str], server: Server) -> None:
    """A killed or timed-out sandbox: envd calls raise SandboxNotRunningException naming why
    it ended; the control plane's 404 says so to its owner only."""
    killed = Sandbox.create(timeout=120)
    expired = Sandbox.create(timeout=120)
    killed.kill()
    expired.set_timeout(1)
    with pytest.raises(SandboxNotRunningException, match="killed by the user"):
        killed.commands.run("true")
    with raw(server, keys["a"]) as c:  # ended (not just "killing"): its end record is kept
        _until(lambda: c.get(f"/sandboxes/{expired.sandbox_id}").status_code == 404)
    with pytest.raises(SandboxNotRunningException, match="ended by its timeout"):
        expired.files.read("/etc/hostname")
    with pytest.raises(SandboxNotFoundException):
        expired.get_info()
    with raw(server, keys["a"]) as c:
        r = c.get(f"/sandboxes/{expired.sandbox_id}")
        assert r.status_code == 404 and "ended by its timeout" in r.json()["message"]
    with raw(server, keys["b"]) as c:  # another tenant: as for an id that never existed
        r = c.get(f"/sandboxes/{expired.sandbox_id}")
        never = c.get("/sandboxes/sbnosuchsandbox")
        assert r.status_code == never.status_code == 404
        assert r.json()["message"].replace(expired.sandbox_id, "ID") == never.json()["message"].replace(
            "sbnosuchsandbox", "ID"
        )


def test_out_of_memory_end_reaches_the_sdk(keys: dict[str, str], server: Server) -> None:
    """A gVisor sandbox that a memory bomb ends: the SDK's next call says so."""
    sb = Sandbox.create(metadata={"stockade.isolation": "gvisor"}, timeout=120)
    # the stream ends with the engine's diagnosis; the SDK's health probe may still find the
    # sandbox (not yet ended by the engine) and call it unreachable rather than not running
    with pytest.raises((SandboxUnreachableException, SandboxNotRunningException), match="out of memory"):
        sb.commands.run("python3 -c 'b = []\nwhile True: b.append(bytearray(8 << 20))'", timeout=60)
    with raw(server, keys["a"]) as c:
        _until(lambda: c.get(f"/sandboxes/{sb.sandbox_id}").status_code == 404, 20)
        message = c.get(f"/sandboxes/{sb.sandbox_id}").json()["message"]
        # gVisor: named after the last command started, which E2B runs as `bash -l -c ...`
        assert "out of memory (bash)" in message
    with pytest.raises(SandboxNotRunningException, match=r"out of memory \(bash\)"):
        sb.commands.run("true")


def test_stockade_secrets_from_metadata(keys: dict[str, str], server: Server) -> None:
    """Metadata ``stockade.secrets`` gives an E2B-created sandbox Stockade secrets: the
    sandbox sees a placeholder, never the value; another tenant cannot name them."""
    with server.client(keys["a"]) as c:
        r = c.post("/secrets", json={"name": "API_KEY", "value": SECRET_VALUE, "hosts": ["api.example.test"]})
        assert r.status_code == 201, r.text
    sb = Sandbox.create(
        timeout=120,
        network={"allow_out": ["api.example.test"]},
        metadata={"stockade.secrets": "API_KEY, TOKEN=API_KEY"},
    )
    try:
        out = sb.commands.run("echo $API_KEY; echo $TOKEN; env").stdout
        first, second = out.splitlines()[:2]
        assert first.startswith("STOCKADE_SECRET_") and second.startswith("STOCKADE_SECRET_")
        assert SECRET_VALUE not in out
        with server.client(keys["a"]) as c:
            assert c.get(f"/sandboxes/{sb.sandbox_id}").json()["secrets"] == ["API_KEY"] * 2
    finally:
        sb.kill()
    with pytest.raises(SandboxException, match="API_KEY"):  # B has no such secret
        Sandbox.create(
            timeout=60,
            network={"allow_out": ["api.example.test"]},
            metadata={"stockade.secrets": "API_KEY"},
            api_key=keys["b"],
        )
    with pytest.raises(SandboxException, match="secrets"):  # not a name
        Sandbox.create(timeout=60, metadata={"stockade.secrets": "BAD NAME"})


async def test_async_fork_and_lifecycle(keys: dict[str, str]) -> None:
    """``AsyncSandbox`` makes the same calls: lifecycle at create, fork."""
    sb = await AsyncSandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        assert (await sb.get_info()).lifecycle == {"on_timeout": "pause", "auto_resume": True}
        await sb.files.write("/home/user/a.txt", "async")
        (copy,) = await sb.fork(timeout=60)
        assert isinstance(copy, AsyncSandbox)
        try:
            assert await copy.files.read("/home/user/a.txt") == "async"
        finally:
            await copy.kill()
    finally:
        await sb.kill()

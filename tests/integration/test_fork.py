"""Fork: copies of a running or paused sandbox own their memory and files (gVisor), the
container tier copies files only and says so, bad counts and other tenants get clear 4xx,
quotas count every copy, and nothing is left behind (one remote-mode server for the module)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import httpx
import pytest
from server_harness import Server, sqlite_server  # noqa: F401

from stockade import Sandbox
from stockade.engine.hostcheck import find_leaks
from stockade.images import ImageStore
from stockade.sdk.exceptions import ConflictError

from tests.conftest import IMAGES_DIR

pytestmark = pytest.mark.root

#: A process that keeps a random value in memory only, and writes it to /tmp/ans-N whenever
#: /tmp/ask-N appears (with a count of the questions it answered so far).
HOLDER = r"""
import os, secrets, time
value, answered = secrets.token_hex(8), 0
while True:
    for name in os.listdir('/tmp'):
        if name.startswith('ask-'):
            answered += 1
            os.remove('/tmp/' + name)
            with open('/tmp/ans-' + name[4:] + '.part', 'w') as f:
                f.write(f'{value} {answered}')
            os.rename('/tmp/ans-' + name[4:] + '.part', '/tmp/ans-' + name[4:])
    time.sleep(0.02)
"""


def ask(sb: Sandbox, n: str) -> str:
    """What the holder process in ``sb`` answers to question ``n``."""
    sb.files.write(f"/tmp/ask-{n}", "?")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sb.files.exists(f"/tmp/ans-{n}"):
            return str(sb.files.read(f"/tmp/ans-{n}"))
        time.sleep(0.05)
    raise AssertionError(f"the holder process in {sb.id} did not answer {n}")


@pytest.fixture(scope="module")
def tenant(sqlite_server: Server) -> Iterator[dict[str, Any]]:  # noqa: F811
    """A tenant's SDK arguments; at teardown its sandboxes are all gone and nothing leaked."""
    key = sqlite_server.new_key("forker")
    yield {"api_url": sqlite_server.url, "api_key": key}
    with sqlite_server.client(key) as c:
        for sb in c.get("/sandboxes").json()["items"]:
            c.delete(f"/sandboxes/{sb['id']}")


def own_layers(server: Server) -> list[str]:
    """This server's fork layers in the shared image store."""
    from stockade.engine.fork import LAYER_PREFIX
    from stockade import host

    digest = host.cgroup_parent(server.data_dir).rsplit("-", 1)[-1]
    return [i.name for i in ImageStore(IMAGES_DIR).list() if i.name.startswith(f"{LAYER_PREFIX}{digest}-")]


def assert_gone(server: Server, *sandboxes: Sandbox) -> None:
    leaks = [leak for sb in sandboxes for leak in find_leaks(server.data_dir, sb.id)]
    assert not leaks, f"killed copies left things behind: {leaks}"


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
def test_gvisor_copies_own_their_memory_and_files(
    sqlite_server: Server,  # noqa: F811
    tenant: dict[str, Any],
    paused: bool,
) -> None:
    source = Sandbox.create(isolation="gvisor", timeout=300, **tenant)
    try:
        source.files.write("/home/user/holder.py", HOLDER)
        source.commands.run("python3 /home/user/holder.py", background=True).disconnect()
        source.files.write("/home/user/shared.txt", "from the source")
        source.files.write("/home/user/doomed.txt", "delete me in a copy")
        value, _ = ask(source, "1").split()
        if paused:
            source.pause()
        copies = source.fork(2)
        try:
            assert len(copies) == 2 and all(c.forked_memory for c in copies)
            assert len({source.id, *(c.id for c in copies)}) == 3
            for i, copy in enumerate(copies):
                assert copy.info.state == "running" and copy.info.isolation == "gvisor"
                # The process came along with its memory: same value, it answered once before.
                assert ask(copy, f"c{i}") == f"{value} 2"
            machine_ids = {c.files.read("/etc/machine-id") for c in copies}
            assert len(machine_ids) == 2, "each copy has its own machine-id"
            # Files are each copy's own: writes and deletions stay where they were made.
            copies[0].files.write("/home/user/shared.txt", "from copy 0")
            copies[0].files.remove("/home/user/doomed.txt")
            copies[1].files.write("/home/user/new.txt", "only in copy 1")
            assert copies[1].files.read("/home/user/shared.txt") == "from the source"
            assert copies[1].files.exists("/home/user/doomed.txt")
            assert not copies[0].files.exists("/home/user/new.txt")
            assert source.get_info().state == ("paused" if paused else "running")
            source.connect()  # resumes a paused source: it is as it was
            assert source.files.read("/home/user/shared.txt") == "from the source"
            assert source.files.exists("/home/user/doomed.txt")
            assert not source.files.exists("/home/user/new.txt")
            source.files.write("/home/user/later.txt", "after the fork")
            assert not copies[0].files.exists("/home/user/later.txt")
            assert ask(source, "s2") == f"{value} 2"  # its process too carried on
            assert own_layers(sqlite_server)
        finally:
            for copy in copies:
                copy.kill()
        assert_gone(sqlite_server, *copies)
    finally:
        source.kill()
    assert not own_layers(sqlite_server), "the last sandbox of a fork took its layer along"


def test_container_copies_files_only_and_says_so(
    sqlite_server: Server,  # noqa: F811
    tenant: dict[str, Any],
) -> None:
    with Sandbox.create(isolation="container", timeout=300, network={"allow_out": []}, **tenant) as source:
        source.files.write("/home/user/notes.txt", "v1")
        with pytest.raises(ConflictError) as refused:
            source.fork(1, memory=True)
        assert "container tier" in str(refused.value) and "forks_memory" in str(refused.value)
        copies = source.fork(3)
        try:
            assert [c.forked_memory for c in copies] == [False, False, False]
            assert all(c.info.network == source.info.network for c in copies)  # a policy too
            copies[0].files.write("/home/user/notes.txt", "v2 in copy 0")
            for copy in copies[1:]:
                assert copy.files.read("/home/user/notes.txt") == "v1"
                assert copy.commands.run("id -un").stdout.strip() == "user"
            source.files.write("/home/user/notes.txt", "v3 in the source")
            assert copies[0].files.read("/home/user/notes.txt") == "v2 in copy 0"
            assert copies[2].files.read("/home/user/notes.txt") == "v1"
            assert source.commands.run("cat /home/user/notes.txt").stdout == "v3 in the source"
        finally:
            for copy in copies:
                copy.kill()
        assert_gone(sqlite_server, *copies)


def test_bad_counts_strangers_and_quotas(sqlite_server: Server) -> None:  # noqa: F811
    with sqlite_server.admin() as admin:
        r = admin.post("/tenants", json={"name": "forkquota", "max_sandboxes": 3})
        assert r.status_code == 201, r.text
    key = sqlite_server.new_key("forkquota")
    stranger = sqlite_server.new_key("forkstranger")
    with sqlite_server.client(key) as c, sqlite_server.client(stranger) as other:
        sb = c.post("/sandboxes", json={"timeout": 300, "persistence": "workspace"}).json()["id"]
        url = f"/sandboxes/{sb}/fork"
        for body in (
            {"count": 0},
            {"count": 17},
            {"count": "3"},
            {"count": 2.5},
            {"count": True},
            {"count": None},
            {"count": 1, "extra": 1},
            [1],
        ):
            r = c.post(url, json=body)
            assert r.status_code in (400, 422), (body, r.text)
            assert "count" in r.text or "extra" in r.text, (body, r.text)
        r = c.post(url, content=b"{not json", headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500
        # Another tenant's sandbox reads as missing, and nothing is made.
        r = other.post(url, json={"count": 1})
        assert r.status_code == 404 and r.json()["code"] == "sandbox_not_found"
        # Three copies would make four sandboxes: over the quota of three, so none is made.
        r = c.post(url, json={"count": 3})
        assert r.status_code == 429 and r.json()["code"] == "quota_exceeded", r.text
        with sqlite_server.admin() as admin:
            assert len(admin.get("/sandboxes").json()["items"]) == 1
        r = c.post(url, json={"count": 2})
        assert r.status_code == 201, r.text
        made = [s["id"] for s in r.json()["items"]]
        assert r.json()["memory"] is False and len(made) == 2
        actions = [(e["action"], e["target"]) for e in c.get("/audit").json()["items"]]
        assert all(("sandbox.fork", i) in actions for i in made)
        # A stopped sandbox cannot be forked: 409 with what to do.
        assert c.post(f"/sandboxes/{sb}/stop").status_code == 200
        r = c.post(url, json={"count": 1})
        assert r.status_code == 409 and "start it first" in r.json()["message"]
        for i in [sb, *made]:
            assert c.delete(f"/sandboxes/{i}").status_code == 204
    leaks = [leak for i in [sb, *made] for leak in find_leaks(sqlite_server.data_dir, i)]
    assert not leaks and not own_layers(sqlite_server), leaks


def test_cli_fork(sqlite_server: Server, tenant: dict[str, Any]) -> None:  # noqa: F811
    import os
    import subprocess
    import sys
    from pathlib import Path

    stockade = str(Path(sys.executable).with_name("stockade"))
    with Sandbox.create(isolation="container", timeout=300, **tenant) as source:
        env = {**os.environ, "STOCKADE_API_URL": tenant["api_url"], "STOCKADE_API_KEY": tenant["api_key"]}
        out = subprocess.run(
            [stockade, "sandbox", "fork", source.id, "-n", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        ids = out.stdout.split()
        assert len(ids) == 2 and "files copied, not processes" in out.stderr
        with httpx.Client(
            base_url=tenant["api_url"], headers={"authorization": f"Bearer {tenant['api_key']}"}
        ) as c:
            for i in ids:
                assert c.get(f"/sandboxes/{i}").json()["state"] == "running"
                assert c.delete(f"/sandboxes/{i}").status_code == 204
        bad = subprocess.run(
            [stockade, "sandbox", "fork", source.id, "-n", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0

"""A sandbox that ended says why (docs/persistence.md, "Why a sandbox ended").

Killed by its owner, ended by its timeout, taken down by the out-of-memory killer, or crashed
because its runtime was killed from outside: each reads ``state="ended"`` with its reason for a
while, to its owner only, through the server and the SDK; the end records are bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any, Iterator

import pytest
from server_harness import Server, finish, needs_root, new_data_dir

from stockade import Sandbox, SandboxUnavailable
from stockade.runtimes import hostops

pytestmark = pytest.mark.root
KEEP = 4  # end records the server keeps (STOCKADE_ENDED_KEEP)
FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 3"
MEMORY_BOMB = ["python3", "-c", "b = []\nwhile True: b.append(bytearray(8 << 20))"]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    needs_root()
    srv = Server(new_data_dir(), STOCKADE_ENDED_KEEP=str(KEEP)).start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    return {"owner": server.new_key("owner"), "other": server.new_key("other")}


def _create(server: Server, key: str, **spec: Any) -> Sandbox:
    return Sandbox.create(api_url=server.url, api_key=key, **spec)


def _info(server: Server, key: str, sandbox_id: str) -> dict[str, Any]:
    with server.client(key) as c:
        r = c.get(f"/sandboxes/{sandbox_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _wait_ended(server: Server, key: str, sandbox_id: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        info = _info(server, key, sandbox_id)
        if info["state"] == "ended":
            return info
        time.sleep(0.2)
    pytest.fail(f"sandbox {sandbox_id} did not end within {within:.0f} s: {info}")


@pytest.mark.parametrize("tier", ["container", "gvisor"])
def test_killed_by_its_owner_reads_ended_killed_and_only_to_its_owner(
        server: Server, keys: dict[str, str], tier: str) -> None:
    sb = _create(server, keys["owner"], isolation=tier, metadata={"job": "k"}, timeout=120)
    assert sb.commands.run("echo hi").stdout == "hi\n"
    before = time.time()
    assert Sandbox.kill(sb.id, api_url=server.url, api_key=keys["owner"]) is True
    info = Sandbox.get_info(sb.id, api_url=server.url, api_key=keys["owner"])  # the SDK reads it
    assert (info.state, info.reason, info.isolation) == ("ended", "killed", tier)
    assert info.metadata == {"job": "k"} and before <= (info.ended_at or 0) <= time.time()
    handle = Sandbox.get(sb.id, api_url=server.url, api_key=keys["owner"])
    assert handle.info.state == "ended" and not handle.is_running()
    handle.close()
    # Ending again is a no-op, and nothing else works on it.
    assert Sandbox.kill(sb.id, api_url=server.url, api_key=keys["owner"]) is False
    with server.client(keys["owner"]) as c:
        assert c.post(f"/sandboxes/{sb.id}/connect").status_code == 404
        assert sb.id not in {s["id"] for s in c.get("/sandboxes").json()["items"]}
        ended = {s["id"]: s for s in c.get("/sandboxes", params={"state": "ended"}).json()["items"]}
        assert ended[sb.id]["reason"] == "killed"
    # Another tenant cannot tell it from a sandbox that never existed.
    with server.client(keys["other"]) as c:
        theirs, never = c.get(f"/sandboxes/{sb.id}"), c.get("/sandboxes/sb" + "0" * 18)
        assert theirs.status_code == 404 == never.status_code
        assert theirs.json()["code"] == never.json()["code"] == "sandbox_not_found"
        assert c.get("/sandboxes", params={"state": "ended"}).json()["items"] == []
    sb.close()


def test_timeout_reads_ended_timeout(server: Server, keys: dict[str, str]) -> None:
    sb = _create(server, keys["owner"], isolation="container", timeout=2)
    info = _wait_ended(server, keys["owner"], sb.id, within=30)
    assert info["reason"] == "timeout"
    sb.close()


@pytest.mark.parametrize("tier", ["container", "gvisor"])
def test_runtime_killed_from_outside_reads_ended_crashed(server: Server, keys: dict[str, str],
                                                         tier: str) -> None:
    sb = _create(server, keys["owner"], isolation=tier, timeout=120)
    assert sb.commands.run("true").exit_code == 0
    cgroup = f"{hostops.cgroup_parent(server.data_dir)}/{sb.id}"
    pids = hostops.cgroup_pids(cgroup)
    assert pids, "no host process in the sandbox's cgroup"
    for pid in pids:  # what a host OOM killer or an operator's kill -9 does to the runtime
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    info = _wait_ended(server, keys["owner"], sb.id, within=30)
    assert info["reason"] == "crashed", info
    assert hostops.cgroup_pids(cgroup) == set()
    sb.close()


def test_memory_bomb_that_kills_a_gvisor_sandbox_reads_out_of_memory(
        server: Server, keys: dict[str, str]) -> None:
    sb = _create(server, keys["owner"], isolation="gvisor", memory_mb=128, timeout=120)
    with pytest.raises(SandboxUnavailable, match="out of memory"):
        sb.commands.run(MEMORY_BOMB, timeout=60)
    info = _wait_ended(server, keys["owner"], sb.id, within=30)
    assert info["reason"] == "out_of_memory", info
    sb.close()


def test_fork_bomb_that_kills_a_gvisor_sandbox_reads_pids_limit(
        server: Server, keys: dict[str, str]) -> None:
    sb = _create(server, keys["owner"], isolation="gvisor", timeout=120)
    with pytest.raises(SandboxUnavailable, match="process limit"):
        sb.commands.run(FORK_BOMB, timeout=30)
    info = _wait_ended(server, keys["owner"], sb.id, within=30)
    assert info["reason"] == "pids_limit", info
    sb.close()


def test_end_records_are_bounded(server: Server, keys: dict[str, str]) -> None:
    ids = []
    for _ in range(KEEP + 2):
        sb = _create(server, keys["owner"], isolation="container", timeout=120)
        ids.append(sb.id)
        sb.kill()
        sb.close()
    with server.client(keys["owner"]) as c:
        assert c.get(f"/sandboxes/{ids[0]}").status_code == 404  # the oldest records went
        assert c.get(f"/sandboxes/{ids[1]}").status_code == 404
        assert c.get(f"/sandboxes/{ids[-1]}").json()["state"] == "ended"
    with server.admin() as c:
        ended = c.get("/sandboxes", params={"state": "ended"}).json()["items"]
    assert len(ended) == KEEP and {s["id"] for s in ended} == set(ids[2:])
    assert len(list((server.data_dir / "ended").iterdir())) == KEEP


def test_sandbox_gone_over_a_restart_reads_host_restart_to_its_owner(
        server: Server, keys: dict[str, str]) -> None:
    sb = _create(server, keys["owner"], isolation="container", timeout=600)
    cgroup = f"{hostops.cgroup_parent(server.data_dir)}/{sb.id}"
    server.stop()  # sandboxes outlive the server...
    try:
        for pid in hostops.cgroup_pids(cgroup):  # ...but this one dies while it is down
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        server.start()
    info = _info(server, keys["owner"], sb.id)
    assert (info["state"], info["reason"]) == ("ended", "host_restart"), info
    with server.client(keys["other"]) as c:
        assert c.get(f"/sandboxes/{sb.id}").status_code == 404
    sb.close()

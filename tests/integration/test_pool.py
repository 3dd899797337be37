"""The warm pool: what a create asks for is bound to the claimed sandbox (env, metadata,
timeout), the pool grows while creates come back to back and shrinks to its floor when they
stop, another template with other limits asked for back to back gets a pool of its own (gone
with its template), and what it removes leaves nothing behind. A daemon of this module's own, with a pool of
1 to 3 container sandboxes and a 3-second demand window."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade import Sandbox, Template
from stockade.engine.hostcheck import find_leaks

pytestmark = [pytest.mark.root]
WINDOW = 3


@pytest.fixture(scope="module")
def pooled(daemon: Any) -> Iterator[Any]:
    env = {"STOCKADE_POOL_SIZE": "1", "STOCKADE_POOL_MAX": "3", "STOCKADE_POOL_WINDOW": str(WINDOW)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    data_dir = Path(tempfile.mkdtemp(prefix="stockade-pool-", dir="/var/tmp"))
    own = type(daemon)(data_dir).start()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k)
        else:
            os.environ[k] = v
    yield own
    try:
        own.kill_sandboxes()
    finally:
        own.stop()
    leaks = find_leaks(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    assert leaks == [], leaks


def _warm(daemon: Any, ready: bool = False, template: str | None = None) -> set[str]:
    """Ids of the pool's container sandboxes: on disk, but not listed to anyone (``ready``:
    only those whose agent listens already; ``template``: only those of that template)."""
    with daemon.client() as client:
        listed = {s["id"] for s in client.get("/sandboxes", params={"limit": 1000}).json()["items"]}
    found = set()
    for d in (daemon.data_dir / "sandboxes").iterdir():
        try:
            state = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            continue
        if (
            d.name not in listed
            and state.get("tier") == "container"
            and (not ready or (d / "disk" / "run" / "agent.sock").exists())
            and (template is None or state.get("image") == template)
        ):
            found.add(d.name)
    return found


def _wait(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return result


def test_a_claimed_sandbox_gets_the_env_metadata_and_timeout_asked_for(pooled: Any) -> None:
    warm = _wait(lambda: _warm(pooled, ready=True), 60)
    assert warm, "the pool never filled"
    time.sleep(0.5)  # its agent listens: the boot is about to hand it to the pool
    sb = Sandbox.create(envs={"LATE": "bound"}, metadata={"run": "7"}, timeout=77, data_dir=pooled.data_dir)
    try:
        assert sb.id in warm, "the create did not claim the warm sandbox"
        assert sb.commands.run("echo $LATE").stdout == "bound\n"
        info = sb.get_info()
        assert info.metadata == {"run": "7"}
        assert 70 < info.expires_at - time.time() <= 77
    finally:
        sb.kill()


def test_the_pool_grows_under_demand_and_shrinks_back_leaving_nothing(pooled: Any) -> None:
    _wait(lambda: len(_warm(pooled)) >= 1, 60)
    seen: set[str] = set()
    most = 0
    for _ in range(12):  # back to back: each create claims one and the pool refills behind
        sb = Sandbox.create(data_dir=pooled.data_dir)
        sb.commands.run("true")
        sb.kill()
        warm = _warm(pooled)
        seen |= warm
        most = max(most, len(warm))
    assert _wait(lambda: len(_warm(pooled)) >= 2, 30), "the pool did not grow past its floor"
    most = max(most, len(_warm(pooled)))
    seen |= _warm(pooled)
    assert 2 <= most <= 3
    assert _wait(lambda: len(_warm(pooled)) == 1, WINDOW + 30), "the pool did not shrink back"
    gone = seen - _warm(pooled)
    assert gone
    for sandbox_id in gone:
        assert find_leaks(pooled.data_dir, sandbox_id) == []


def test_another_template_and_limits_asked_for_back_to_back_get_a_pool_of_their_own(pooled: Any) -> None:
    source = Sandbox.create(data_dir=pooled.data_dir)
    source.files.write("/home/user/marker", "from the snapshot")
    source.snapshot("pooled-snap")
    source.kill()
    try:
        for _ in range(3):  # asked for back to back: the engine starts keeping some ready
            Sandbox.create(template="pooled-snap", memory_mb=384, data_dir=pooled.data_dir).kill()
        warm = _wait(lambda: _warm(pooled, ready=True, template="pooled-snap"), 60)
        assert warm, "no pool for the template asked for back to back"
        time.sleep(0.5)
        sb = Sandbox.create(
            template="pooled-snap", memory_mb=384, envs={"LATE": "bound"}, data_dir=pooled.data_dir
        )
        try:
            assert sb.id in warm, "the create did not claim the template's warm sandbox"
            assert sb.files.read("/home/user/marker") == "from the snapshot"
            assert sb.commands.run("echo $LATE").stdout == "bound\n"
            assert sb.get_info().memory_mb == 384
            assert sb.stats()["memory_limit_bytes"] == 384 << 20  # the cgroup's, as booted
        finally:
            sb.kill()
        # The other limits are another pool: a default-limit create of it is not served warm.
        plain = Sandbox.create(template="pooled-snap", data_dir=pooled.data_dir)
        assert plain.id not in _warm(pooled) | warm
        assert plain.get_info().memory_mb != 384
        plain.kill()
        refilled = _wait(lambda: _warm(pooled, template="pooled-snap"), 60)
        assert refilled, "the claim was not refilled"
    finally:
        Template.delete("pooled-snap", data_dir=pooled.data_dir)  # its warm sandboxes go first
    assert not _warm(pooled, template="pooled-snap")
    for sandbox_id in warm | refilled:
        assert find_leaks(pooled.data_dir, sandbox_id) == []

"""Templates in a cluster: made on one host, run on another through shared storage.

Two hosts on one machine, each with its own image store (the operator's ``base`` only) and one
shared directory, and two API replicas. A tenant builds a template through one replica (the
build runs on host a) and, with host a drained, creates from it through the other replica on
host b, which adopts it from shared storage: a command sees the template's files. A copy
damaged on shared storage is refused by b (a still runs its own) and a publication killed
half-way is never taken. A snapshot of
that sandbox (on b) runs on a. Another tenant neither sees nor uses nor deletes either; a
delete removes them from shared storage and from both hosts.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from stockade import Template
from stockade.engine.hostcheck import find_leaks

from cluster_harness import Cluster, Host, stop, sweep
from server_harness import Postgres, needs_root
from test_cluster import _host_of, _hosts, _run, _wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]
DOCKERFILE = """FROM base
COPY hello.txt /opt/hello.txt
RUN echo "built from $(cat /opt/hello.txt)" > /opt/made.txt
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    needs_root()
    pg = Postgres().start()
    c = Cluster()
    shared = Path(tempfile.mkdtemp(prefix="stockade-shared-", dir="/var/tmp"))
    try:
        c.start_head()
        for name in ("a", "b"):
            c.hosts[name] = Host(name, c.address, shared_dir=shared, own_images=True).start()
        c.database_url = pg.create_database("stockade_cluster_templates")
        c.start_api(c.database_url)
        c.start_api(c.database_url)
        yield c
    finally:
        for api in c.apis:
            stop(api)
        for host in c.hosts.values():
            stop(host.proc)
        stop(c.head)
        pg.stop()
        time.sleep(1)
        left = c.leftover_processes()
        swept = [i for h in c.hosts.values() for i in sweep(h.data_dir)]
        leaks = [leak for h in c.hosts.values() for leak in find_leaks(h.data_dir)]
        for host in c.hosts.values():
            subprocess.run(["rm", "-rf", str(host.data_dir)], check=False)
        shutil.rmtree(c.ray_dir, ignore_errors=True)
        shared_left = sorted(p.name for p in shared.glob("*/*"))
        shutil.rmtree(shared, ignore_errors=True)
    assert not shared_left, f"left on shared storage: {shared_left}"
    assert not left, f"processes left running: {left}"
    assert not swept, f"sandboxes the cluster did not kill: {swept}"
    assert not leaks, f"the hosts left things behind: {leaks}"


def _only(admin: httpx.Client, host: str) -> None:
    """New sandboxes go to ``host`` only: the other host drains."""
    for name in ("a", "b"):
        verb = "undrain" if name == host else "drain"
        assert admin.post(f"/cluster/hosts/{name}/{verb}").status_code == 200


def _create(client: httpx.Client, template: str) -> str:
    r = client.post("/sandboxes", json={"template": template, "isolation": "container", "timeout": 300})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _images(host: Host) -> set[str]:
    return {p.name for p in host.images_dir.iterdir() if not p.name.startswith(".")}


def test_a_template_made_on_one_host_runs_on_the_other_for_its_tenant_only(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.hosts["a"], cluster.hosts["b"]
    assert a.shared_dir is not None
    published = a.shared_dir / "templates"
    first, second = cluster.replica_urls
    with cluster.client() as admin:
        _wait_for(lambda: all(h["state"] == "alive" for h in _hosts(admin).values()))
        key = admin.post("/keys", json={"tenant": "maker"}).json()["key"]
        other_key = admin.post("/keys", json={"tenant": "other"}).json()["key"]
        try:
            _only(admin, "a")
            # Built through the first replica: it runs on host a and is published.
            (tmp_path / "Dockerfile").write_text(DOCKERFILE)
            (tmp_path / "hello.txt").write_text("the context")
            events: list[dict[str, Any]] = []
            info = Template.build(
                str(tmp_path / "Dockerfile"),
                name="shared-built",
                on_event=events.append,
                api_url=first,
                api_key=key,
            )
            assert info.name == "shared-built" and info.owner == "maker"
            assert [e["status"] for e in events if e["type"] == "step"].count("built") == 2, events
            assert "shared-built" in _images(a) and "shared-built" not in _images(b)
            assert (published / "shared-built").is_dir()

            # Its copy on shared storage damaged (a file truncated): b refuses it, saying so,
            # and keeps nothing of it; a still runs it from its own copy.
            (made,) = published.glob("*/*/rootfs/opt/made.txt")
            intact = made.read_bytes()
            with open(made, "r+b") as f:
                f.truncate(3)
            _only(admin, "b")
            with cluster.client(second, key=key) as mine:
                r = mine.post("/sandboxes", json={"template": "shared-built", "isolation": "container"})
            assert r.status_code == 409, r.text
            assert "is damaged" in r.text and "/opt/made.txt: 3 bytes" in r.text, r.text
            assert "shared-built" not in _images(b)
            _only(admin, "a")
            with cluster.client(first, key=key) as mine:
                sandbox = _create(mine, "shared-built")
                assert _host_of(admin, sandbox) == "a"
                out = _run(mine, sandbox, cmd="cat /opt/made.txt")
                assert out["stdout"] == "built from the context\n", out
                assert mine.delete(f"/sandboxes/{sandbox}").status_code == 204
            made.write_bytes(intact)  # repaired

            # A newer publication killed half-way (a hidden directory without its image.json
            # or manifest) is never taken: b adopts the whole version.
            version = made.parents[2]
            half = version.parent / f".{'f' * 16}-{'0' * 12}.tmp"
            shutil.copytree(version / "rootfs", half / "rootfs", symlinks=True)
            (half / "rootfs" / "opt" / "made.txt").write_text("half")

            # Host a drained: a create through the second replica lands on b, which adopts it.
            _only(admin, "b")
            with cluster.client(second, key=key) as mine:
                names = [t["name"] for t in mine.get("/templates").json()["items"]]
                assert "shared-built" in names
                sandbox = _create(mine, "shared-built")
                assert _host_of(admin, sandbox) == "b"
                assert "shared-built" in _images(b)
                out = _run(mine, sandbox, cmd="cat /opt/made.txt /opt/hello.txt")
                assert out["stdout"] == "built from the context\nthe context", out
                assert (b.images_dir / version.parent.name / ".shared").read_text() == version.name
                shutil.rmtree(half)

                # A snapshot of that sandbox (on b), through the first replica, runs on a.
                assert _run(mine, sandbox, cmd="echo noted > /home/user/note")["exit_code"] == 0
                with cluster.client(first, key=key) as mine_too:
                    r = mine_too.post(f"/sandboxes/{sandbox}/snapshot", json={"name": "shared-snap"})
                    assert r.status_code == 201, r.text
                    again = mine_too.post(f"/sandboxes/{sandbox}/snapshot", json={"name": "shared-built"})
                    assert again.status_code == 409, again.text
                assert (published / "shared-snap").is_dir() and "shared-snap" not in _images(a)
                _only(admin, "a")
                copy = _create(mine, "shared-snap")
                assert _host_of(admin, copy) == "a"
                out = _run(mine, copy, cmd="cat /home/user/note /opt/made.txt")
                assert out["stdout"] == "noted\nbuilt from the context\n", out

                # Another tenant sees neither, through either replica, and cannot use them.
                for url in (first, second):
                    with cluster.client(url, key=other_key) as other:
                        assert "shared-snap" not in str(other.get("/templates").json())
                        for name in ("shared-built", "shared-snap"):
                            assert other.get(f"/templates/{name}").status_code == 404
                            assert other.delete(f"/templates/{name}").status_code == 404
                            r = other.post("/sandboxes", json={"template": name})
                            assert r.status_code in (400, 404) and name in r.text, r.text
                        r = other.post(f"/sandboxes/{sandbox}/snapshot", json={"name": "stolen"})
                        assert r.status_code == 404, r.text

                # In use: not deleted. Unused: gone from shared storage and from both hosts.
                r = mine.delete("/templates/shared-snap")
                assert r.status_code == 409 and copy in r.text, r.text
                for sandbox_id in (sandbox, copy):
                    assert mine.delete(f"/sandboxes/{sandbox_id}").status_code == 204
                assert mine.delete("/templates/shared-snap").status_code == 204
                assert mine.delete("/templates/shared-built").status_code == 204
                assert mine.post("/templates/prune").status_code == 200
                for url in (first, second):
                    with cluster.client(url, key=key) as look:
                        assert look.get("/templates/shared-built").status_code == 404
                        assert look.get("/templates/shared-snap").status_code == 404
            assert [p.name for p in published.iterdir() if not p.name.startswith(".")] == []
            assert _images(a) == {"base"} and _images(b) == {"base"}, (_images(a), _images(b))
        finally:
            for name in ("a", "b"):
                admin.post(f"/cluster/hosts/{name}/undrain")

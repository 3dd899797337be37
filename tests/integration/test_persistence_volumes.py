"""Named volumes: outlive sandboxes, mount into several, read-only when asked, size-limited."""

from __future__ import annotations

import secrets
from typing import Callable, Iterator

import pytest

from stockade import ConflictError, InvalidRequestError, NotFoundError, Sandbox, StorageFullError, Volume
from tests.conftest import Daemon
from tests.integration.server_harness import Server, finish, needs_root, new_data_dir


@pytest.fixture
def volume_name(daemon: Daemon) -> Iterator[Callable[[], str]]:
    """Names for the test's volumes; each is deleted at teardown (its sandboxes killed first)."""
    made: list[str] = []

    def make() -> str:
        made.append(f"vol-{secrets.token_hex(4)}")
        return made[-1]

    yield make
    with daemon.client() as client:
        for name in made:
            info = client.get(f"/volumes/{name}")
            if info.status_code == 404:
                continue
            for sandbox_id in info.json()["mounted_by"]:
                client.delete(f"/sandboxes/{sandbox_id}")
            assert client.delete(f"/volumes/{name}").status_code == 204


def test_volume_outlives_the_sandbox_that_wrote_it(
    make_sandbox: Callable[..., Sandbox], volume_name: Callable[[], str]
) -> None:
    vol = Volume.create(volume_name(), size_mb=64)
    writer = Sandbox.create(isolation="container", timeout=120, volumes={"/data": vol})
    try:
        writer.files.write("/data/result.txt", "written by the first")
        assert writer.info.volumes == [{"volume": vol.name, "path": "/data", "read_only": False}]
    finally:
        writer.kill()

    reader = make_sandbox(isolation="gvisor", volumes={"/mnt/in": {"volume": vol.name, "read_only": True}})
    assert reader.files.read("/mnt/in/result.txt") == "written by the first"
    denied = reader.commands.run("echo x > /mnt/in/new.txt")
    assert denied.exit_code != 0 and "Read-only" in denied.stderr
    again = make_sandbox(isolation="container", volumes={"/data": vol.name})
    assert again.files.read("/data/result.txt") == "written by the first"


def test_volume_cannot_be_deleted_while_mounted(
    make_sandbox: Callable[..., Sandbox], volume_name: Callable[[], str]
) -> None:
    vol = Volume.create(volume_name(), size_mb=32)
    with pytest.raises(ConflictError, match="already exists"):
        Volume.create(vol.name)
    sb = make_sandbox(isolation="container", persistence="workspace", volumes={"/v": vol})
    sb.stop()  # a stopped workspace still counts: start mounts it again
    assert Volume.get(vol.name).mounted_by == [sb.id]
    with pytest.raises(ConflictError, match="mounted by"):
        Volume.delete(vol.name)
    assert vol.name in [v.name for v in Volume.list()]
    Sandbox.connect(sb.id).kill()  # (sb's own kill at teardown is then a no-op)
    Volume.delete(vol.name)
    assert vol.name not in [v.name for v in Volume.list()]
    with pytest.raises(NotFoundError):
        make_sandbox(isolation="container", volumes={"/v": vol.name})


def test_volume_at_its_size_limit_refuses_writes(
    make_sandbox: Callable[..., Sandbox], volume_name: Callable[[], str]
) -> None:
    vol = Volume.create(volume_name(), size_mb=16)
    sb = make_sandbox(isolation="container", volumes={"/data": vol})
    full = sb.commands.run("dd if=/dev/zero of=/data/big bs=1M count=40")
    assert full.exit_code != 0 and "No space left" in full.stderr
    with pytest.raises(StorageFullError):
        sb.files.write("/data/more.bin", b"x" * (4 << 20))
    sb.commands.run("rm /data/big")
    sb.files.write("/data/more.bin", b"x" * (4 << 20))  # room again


@pytest.mark.parametrize("path", ["/", "/proc/x", "/.stockade/run", "relative", "/a/../b"])
def test_volume_mount_paths_are_checked(
    make_sandbox: Callable[..., Sandbox], volume_name: Callable[[], str], path: str
) -> None:
    vol = Volume.create(volume_name(), size_mb=16)
    with pytest.raises(InvalidRequestError):
        make_sandbox(isolation="container", volumes={path: vol})


def test_tenants_cannot_see_or_mount_each_others_volumes() -> None:
    needs_root()
    server = Server(new_data_dir()).start()
    try:
        owner, other = server.new_key("owner"), server.new_key("other")
        with server.client(owner) as c:
            assert c.post("/volumes", json={"name": "private", "size_mb": 16}).status_code == 201
        with server.client(other) as c:
            assert c.get("/volumes").json()["items"] == []
            assert c.get("/volumes/private").status_code == 404
            assert c.delete("/volumes/private").status_code == 404
            r = c.post("/sandboxes", json={"volumes": {"/data": "private"}})
            assert r.status_code == 404 and "no volume" in r.json()["message"]
        with server.client(owner) as c:
            assert [v["name"] for v in c.get("/volumes").json()["items"]] == ["private"]
            assert c.delete("/volumes/private").status_code == 204
    finally:
        finish(server)

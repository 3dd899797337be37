"""E2B's template build API and the rest of the SDK surface added after the first E2B slice,
driven by the unmodified PyPI ``e2b`` package against a real Stockade server."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from e2b import AsyncSandbox, AsyncTemplate, Sandbox, Secret, Template, TemplateBuildStatus, Volume
from e2b.exceptions import (
    BuildException,
    SandboxException,
    SecretException,
    TemplateException,
    VolumeException,
    VolumeNotFoundException,
)
from server_harness import Server, finish, needs_root, new_data_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]
#: Templates the tests build (deleted at the end of the module).
BUILT = ("e2b-app", "e2b-bg", "e2b-async", "e2b-fails", "e2b-refused", "e2b-junk")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    needs_root()
    srv = Server(new_data_dir()).start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def keys(server: Server) -> Iterator[dict[str, str]]:
    """One key per tenant; the E2B variables point the SDK at the server as tenant A."""
    found = {"a": server.new_key("tpl-a"), "b": server.new_key("tpl-b")}
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(
        E2B_API_URL=server.url + "/e2b", E2B_SANDBOX_URL=server.url + "/e2b", E2B_API_KEY=found["a"]
    )
    yield found
    # the image store is the host's: remove the templates built here and their build cache
    with server.client(found["a"]) as c:
        for name in BUILT:
            assert c.delete(f"/templates/{name}").status_code in (204, 404)
        assert c.post("/templates/prune").status_code == 200
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _poll(info: object, until: set[TemplateBuildStatus], timeout: float = 180):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        status = Template.get_build_status(info)  # type: ignore[arg-type]
        if status.status in until or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def test_template_build_copy_env_user_and_rebuild(
    keys: dict[str, str], server: Server, tmp_path: Path
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('from the context')\n")
    template = (
        Template(file_context_path=tmp_path)
        .from_base_image()
        .copy("app/main.py", "/home/user/app/")
        .set_envs({"GREETING": "it's $HOME"})
        .run_cmd("cd && whoami > build-user && python3 app/main.py > out.txt")
        .run_cmd(
            "touch /opt/by-root; python3 -c 'import socket; "
            "print(*[n for _, n in socket.if_nameindex()])' > /opt/nets",
            user="root",
        )
        .set_workdir("/home/user/app")
    )
    logs: list[str] = []
    info = Template.build(template, "e2b-app", on_build_logs=lambda e: logs.append(e.message))
    assert info.template_id == "e2b-app" and info.build_id
    assert any("ready" in line for line in logs), logs
    assert Template.exists("e2b-app")
    sb = Sandbox.create("e2b-app", timeout=120)
    try:
        r = sb.commands.run(
            'cat /home/user/build-user /home/user/out.txt; echo "$GREETING"; pwd; stat -c %U /opt/by-root'
        )
        assert r.stdout == ("user\nfrom the context\nit's $HOME\n/home/user/app\nroot\n")
        assert sb.files.read("/home/user/app/main.py") == "print('from the context')\n"
        nets = sb.files.read("/opt/nets").split()
        assert "lo" in nets and len(nets) > 1  # RUN steps had a network (egress, as on E2B)
    finally:
        sb.kill()
    # a rebuild of the same name replaces the template; the upload is not sent again
    logs.clear()
    again = (
        Template(file_context_path=tmp_path)
        .from_template("base")
        .copy("app/main.py", "/home/user/app/")
        .run_cmd("echo v2 > /home/user/version")
    )
    Template.build(again, "e2b-app", on_build_logs=lambda e: logs.append(e.message))
    assert any("already cached" in line for line in logs), logs
    sb = Sandbox.create("e2b-app", timeout=120)
    try:
        r = sb.commands.run("cat /home/user/version; ls /home/user/app; ls /home/user")
        assert r.stdout == "v2\nmain.py\napp\nversion\n"  # the first build's files are gone
    finally:
        sb.kill()


def test_failed_and_background_builds(keys: dict[str, str], server: Server) -> None:
    failing = Template().from_template("base").run_cmd("echo about to fail; exit 3")
    with pytest.raises(BuildException, match="exit code 3"):
        Template.build(failing, "e2b-fails")
    assert not Template.exists("e2b-fails")
    info = Template.build_in_background(Template().from_dockerfile("FROM base\nRUN sleep 1"), "e2b-bg")
    assert Template.get_build_status(info).status in (TemplateBuildStatus.BUILDING, TemplateBuildStatus.READY)
    done = _poll(info, {TemplateBuildStatus.READY, TemplateBuildStatus.ERROR})
    assert done.status == TemplateBuildStatus.READY, done.reason
    assert any("sleep 1" in e.message for e in Template.get_build_status(info, 0).log_entries)
    # tenant B sees neither the build nor the template
    with pytest.raises(BuildException, match="no build"):
        Template.get_build_status(info, api_key=keys["b"])
    assert not Template.exists("e2b-bg", api_key=keys["b"])
    with pytest.raises(SandboxException, match="no template 'e2b-bg'"):
        Sandbox.create("e2b-bg", api_key=keys["b"])


async def test_async_template_build(keys: dict[str, str]) -> None:
    """``AsyncTemplate`` makes the same calls as ``Template``."""
    info = await AsyncTemplate.build(
        AsyncTemplate().from_template("base").run_cmd("echo async > /home/user/async.txt"), "e2b-async"
    )
    assert info.template_id == "e2b-async"
    sb = await AsyncSandbox.create("e2b-async", timeout=60)
    try:
        assert await sb.files.read("/home/user/async.txt") == "async\n"
    finally:
        await sb.kill()


@pytest.mark.parametrize(
    "template, words",
    [
        (lambda: Template().from_python_image("3"), "cannot be pulled"),
        (lambda: Template().from_base_image().set_start_cmd("sleep 1", "true"), "start command"),
        (lambda: Template().from_template("no-such-template").run_cmd("true"), "no template"),
    ],
)
def test_builds_stockade_cannot_do_fail_clearly(keys: dict[str, str], template: object, words: str) -> None:
    with pytest.raises(BuildException, match=words):
        Template.build(template(), "e2b-refused")  # type: ignore[operator]


def test_upload_links_are_signed(server: Server, keys: dict[str, str]) -> None:
    digest = "ab" * 32
    with httpx.Client(base_url=server.url + "/e2b", timeout=30, headers={"X-API-Key": keys["a"]}) as c:
        link = c.get(f"/templates/x/files/{digest}")
        assert link.status_code == 201 and link.json()["present"] is False
        url = link.json()["url"]
        forged = url.replace("tenant=", "tenant=x")
        assert c.put(forged, content=b"junk").status_code == 401
        assert c.put(url.replace("signature=", "signature=0"), content=b"x").status_code == 401
        assert c.get("/templates/x/files/..%2F..%2Fetc").status_code in (400, 404)
        # a garbage tar (larger than the 8 MiB JSON body limit: uploads stream) is stored,
        # but a build that copies from it fails with a clear error
        assert c.put(url, content=b"not a tar" * (1 << 20)).status_code == 201
        assert c.get(f"/templates/x/files/{digest}").json() == {"present": True}
        build = c.post("/v3/templates", json={"name": "e2b-junk"}).json()
        start = c.post(
            f"/v2/templates/e2b-junk/builds/{build['buildID']}",
            json={
                "fromTemplate": "base",
                "steps": [{"type": "COPY", "args": ["f", "/tmp/"], "filesHash": digest}],
            },
        )
        assert start.status_code == 400 and "tar" in start.json()["message"]
        bad = c.post("/v2/templates/e2b-junk/builds/zz", json={})
        assert bad.status_code == 400
        assert c.post("/v3/templates", json={"name": "Bad Name!"}).status_code == 400


def test_idempotency_keys_survive_a_restart_and_stay_per_tenant(server: Server, keys: dict[str, str]) -> None:
    body = {"templateID": "base", "timeout": 120}

    def create(key: str, tenant: str = "a") -> str:
        with httpx.Client(
            base_url=server.url + "/e2b",
            timeout=60,
            headers={"X-API-Key": keys[tenant], "Idempotency-Key": key},
        ) as c:
            r = c.post("/v2/sandboxes", json=body)
            assert r.status_code == 201, r.text
            return str(r.json()["sandboxID"])

    with ThreadPoolExecutor(4) as pool:  # concurrent retries of one create make one sandbox
        made = set(pool.map(lambda _: create("same-key"), range(4)))
    assert len(made) == 1
    first = made.pop()
    other = create("same-key", "b")
    assert other != first  # the key is the tenant's own
    server.stop()
    server.start()
    assert create("same-key") == first  # the store kept it
    Sandbox.connect(first).kill()
    assert create("same-key") != first  # its sandbox ended: the key makes a new one


def test_volumes_outlive_sandboxes_and_stay_per_tenant(keys: dict[str, str]) -> None:
    vol = Volume.create("e2b-vol")
    try:
        assert vol.volume_id == vol.name == "e2b-vol"
        assert "e2b-vol" in [v.name for v in Volume.list()]
        assert Volume.get_info("e2b-vol").name == "e2b-vol"
        sb = Sandbox.create(volume_mounts={"/mnt/data": vol}, timeout=120)
        try:
            sb.files.write("/mnt/data/kept.txt", "kept")
        finally:
            sb.kill()
        sb = Sandbox.create(volume_mounts={"/mnt/data": "e2b-vol"}, timeout=120)
        try:
            assert sb.files.read("/mnt/data/kept.txt") == "kept"
            with pytest.raises(VolumeException, match="mounted by"):  # in use: 409
                Volume.destroy("e2b-vol")
            assert "e2b-vol" in [v.name for v in Volume.list()]
        finally:
            sb.kill()
        # tenant B neither sees, mounts nor deletes it
        assert "e2b-vol" not in [v.name for v in Volume.list(api_key=keys["b"])]
        with pytest.raises(VolumeNotFoundException):
            Volume.get_info("e2b-vol", api_key=keys["b"])
        with pytest.raises(SandboxException, match="e2b-vol"):
            Sandbox.create(volume_mounts={"/mnt/data": "e2b-vol"}, api_key=keys["b"])
        assert Volume.destroy("e2b-vol", api_key=keys["b"]) is False
    finally:
        assert Volume.destroy("e2b-vol") is True
    assert Volume.destroy("e2b-vol") is False


@pytest.mark.parametrize(
    "options, words",
    [
        (
            {
                "network": {
                    "allow_out": ["api.example.test"],
                    "rules": {
                        "api.example.test": [
                            {"transform": {"headers": {"Authorization": "Bearer ${e2b.secrets.K}"}}}
                        ]
                    },
                }
            },
            "network.rules .* 'stockade.secrets'",
        ),
        ({"network": {"allow_out": ["1.1.1.1"], "dns_servers": ["1.1.1.1"]}}, "dnsServers"),
        ({"mcp": {"exa": {"apiKey": "x"}}}, "MCP"),
    ],
)
def test_create_options_stockade_lacks_are_refused(
    keys: dict[str, str], options: dict[str, object], words: str
) -> None:
    """Never silently ignored: a SandboxException naming the option, and no sandbox made."""
    before = {s.sandbox_id for s in Sandbox.list().next_items()}
    with pytest.raises(SandboxException, match=words):
        Sandbox.create(timeout=60, **options)  # type: ignore[arg-type]
    assert {s.sandbox_id for s in Sandbox.list().next_items()} == before


def test_microvm_tier_from_metadata(keys: dict[str, str]) -> None:
    """The microVM tier (QEMU) through unmodified E2B code: tier from metadata."""
    sb = Sandbox.create(metadata={"stockade.isolation": "microvm"}, timeout=300)
    try:
        r = sb.commands.run("uname -r; whoami")
        kernel, user = r.stdout.split()
        assert user == "user" and kernel != os.uname().release  # its own guest kernel
        sb.files.write("/home/user/vm.txt", "in a vm")
        assert sb.files.read("/home/user/vm.txt") == "in a vm"
        assert sb.get_info().metadata["stockade.isolation"] == "microvm"
    finally:
        sb.kill()


def test_sdk_calls_stockade_does_not_serve_fail_clearly(keys: dict[str, str], server: Server) -> None:
    """Each gets the SDK's exception for that call with a message saying what is missing
    (501), never a 500 and never a misleading 'not found'."""
    sb = Sandbox.create(timeout=60)
    try:
        with pytest.raises(TemplateException, match="tags are not supported"):
            Template.get_tags("base")
        with pytest.raises(TemplateException, match="tags are not supported"):
            Template.assign_tags("base", ["v1"])
        with pytest.raises(SecretException, match="secrets are not supported.*POST /secrets"):
            Secret.list().next_items()
        with httpx.Client(base_url=server.url + "/e2b", timeout=30) as c:
            assert c.get("/sandboxes/metrics").status_code == 401  # the key is checked first
            r = c.get("/sandboxes/metrics", headers={"X-API-Key": keys["a"]})
            assert r.status_code == 501 and r.json()["code"] == 501
        assert sb.is_running()
    finally:
        sb.kill()


def test_git_in_the_sandbox(keys: dict[str, str]) -> None:
    """``sandbox.git`` runs git through commands; the base template has git."""
    sb = Sandbox.create(timeout=120)
    try:
        repo = "/home/user/repo"
        sb.git.init(repo, initial_branch="main")
        sb.git.configure_user("Test", "test@example.invalid", scope="local", path=repo)
        sb.files.write(f"{repo}/a.txt", "a")
        assert [f.name for f in sb.git.status(repo).file_status] == ["a.txt"]
        sb.git.add(repo)
        sb.git.commit(repo, "first")
        sb.git.create_branch(repo, "feature")
        branches = sb.git.branches(repo)
        assert branches.current_branch == "feature" and "main" in branches.branches
        assert sb.git.status(repo).file_status == []
    finally:
        sb.kill()

"""Templates built from a Dockerfile subset in real build sandboxes: files, env, cwd and user
reach the template's sandboxes; the per-step cache; failed and cancelled builds leave nothing;
COPY cannot read outside its context; bad Dockerfiles are refused line by line; tenants."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from stockade import (
    AsyncTemplate,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    Sandbox,
    Template,
    TemplateBuildError,
)
from stockade.images import ImageStore

from tests.conftest import IMAGES_DIR, Daemon

pytestmark = pytest.mark.root
STOCKADE = str(Path(sys.executable).parent / "stockade")
TOKEN = secrets.token_hex(4)  # keeps this session's cache keys apart from earlier sessions'
DOCKERFILE = f"""# a template for the tests
FROM base
RUN echo "token {TOKEN}" > /etc/build-token && \\
    echo built-in-a-sandbox
COPY app.py data/ /srv/app/
ENV GREETING="hello world" TOOL_HOME=/opt/tool
ENV PATH=$TOOL_HOME/bin:$PATH
WORKDIR /srv/app
RUN useradd --create-home builder
USER builder
RUN echo "$GREETING from $(id -un) in $(pwd)" > /home/builder/made.txt
"""


@pytest.fixture
def templates(daemon: Daemon) -> Iterator[Callable[[], str]]:
    """Names for the test's templates; each is deleted at teardown, then the cache pruned."""
    made: list[str] = []

    def make() -> str:
        made.append(f"tb-{TOKEN}-{secrets.token_hex(3)}")
        return made[-1]

    yield make
    for name in reversed(made):
        try:
            Template.delete(name)
        except NotFoundError:
            pass
    Template.prune()


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "data").mkdir(parents=True)
    (ctx / "app.py").write_text("print('app')\n")
    (ctx / "data" / "d.txt").write_text("data file\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def build(context: Path, name: str, text: str | None = None) -> tuple[Any, list[dict[str, Any]]]:
    if text is not None:
        (context / "Dockerfile").write_text(text)
    events: list[dict[str, Any]] = []
    info = Template.build(str(context / "Dockerfile"), name=name, on_event=events.append)
    return info, events


def statuses(events: list[dict[str, Any]]) -> dict[str, str]:
    """Each step's final status, by instruction keyword + line order."""
    done = [e for e in events if e["type"] == "step" and e["status"] != "started"]
    return {f"{e['step']}:{e['instruction'].split()[0]}": e["status"] for e in done}


def build_leftovers(daemon: Daemon, name: str) -> list[str]:
    with daemon.client() as c:
        sandboxes = [
            s["id"]
            for s in c.get("/sandboxes", params={"limit": 1000}).json()["items"]
            if s["metadata"].get("stockade.template") == name
        ]
    staging = [e for e in os.listdir(IMAGES_DIR) if e.startswith(f".build-{name}-")]
    return sandboxes + staging + (["template"] if ImageStore(IMAGES_DIR).exists(name) else [])


def test_build_gives_files_env_cwd_and_user_then_rebuild_is_cached(
    context: Path, templates: Callable[[], str], make_sandbox: Callable[..., Sandbox]
) -> None:
    name = templates()
    started = time.monotonic()
    info, events = build(context, name)
    first = time.monotonic() - started
    assert statuses(events) == {
        "1:FROM": "cached",
        "2:RUN": "built",
        "3:COPY": "built",
        "4:ENV": "configured",
        "5:ENV": "configured",
        "6:WORKDIR": "built",
        "7:RUN": "built",
        "8:USER": "configured",
        "9:RUN": "built",
    }
    logs = "".join(e["data"] for e in events if e["type"] == "log")
    assert "built-in-a-sandbox" in logs
    assert info.name == name and info.config["workdir"] == "/srv/app"
    assert info.config["user"] == "builder"

    for tier in ("container", "gvisor"):
        sb = make_sandbox(template=name, isolation=tier)
        out = sb.commands.run(
            "pwd; id -un; echo $GREETING; echo $PATH; cat /etc/build-token "
            "app.py d.txt /home/builder/made.txt; "
            "python3 -c 'import os; print(os.stat(\"app.py\").st_uid)'"
        )
        assert out.exit_code == 0, out.stderr
        assert out.stdout.splitlines() == [
            "/srv/app",
            "builder",
            "hello world",
            "/opt/tool/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"token {TOKEN}",
            "print('app')",
            "data file",
            "hello world from builder in /srv/app",
            "0",
        ]
        # Explicit arguments still win over the template's defaults.
        assert sb.commands.run("id -un; pwd", user="root", cwd="/").stdout.split() == ["root", "/"]

    # The same Dockerfile again: every step from the cache, and the same layers.
    again = templates()
    started = time.monotonic()
    info2, events2 = build(context, again)
    cached = time.monotonic() - started
    assert set(statuses(events2).values()) <= {"cached", "configured"}
    assert not [e for e in events2 if e["type"] == "log"]
    assert info2.parent == info.parent
    print(f"first build {first:.2f} s, fully cached rebuild {cached:.2f} s")

    # A changed last step rebuilds only that step.
    changed = templates()
    _, events3 = build(context, changed, DOCKERFILE.replace("made.txt", "made2.txt"))
    assert statuses(events3) == {**statuses(events2), "9:RUN": "built"}
    # A changed COPY source rebuilds from the COPY on.
    (context / "data" / "d.txt").write_text("changed\n")
    _, events4 = build(context, templates(), DOCKERFILE)
    assert [k for k, v in statuses(events4).items() if v == "built"] == [
        "3:COPY",
        "6:WORKDIR",
        "7:RUN",
        "9:RUN",
    ]

    # A template in use by a sandbox or by another template cannot be deleted.
    child = templates()
    build(context, child, f"FROM {changed}\nRUN true\n")
    with pytest.raises(ConflictError, match=f"parent of template '{child}'"):
        Template.delete(changed)
    sb = make_sandbox(template=child, isolation="container")
    with pytest.raises(ConflictError, match=f"used by sandbox {sb.id}"):
        Template.delete(child)
    sb.kill()
    Template.delete(child)
    Template.delete(changed)
    assert changed not in [t.name for t in Template.list()]


def test_cli_builds_with_progress(context: Path, templates: Callable[[], str]) -> None:
    name = templates()
    (context / "Dockerfile").write_text(f"FROM base\nENV X={TOKEN}\nRUN echo cli-{TOKEN}\n")
    result = subprocess.run(
        [STOCKADE, "image", "build", "-f", str(context / "Dockerfile"), "--name", name],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    assert "[3/3] RUN echo" in result.stderr and f"cli-{TOKEN}" in result.stderr
    assert f"template {name} ready" in result.stderr
    assert Template.get(name).config["env"] == {"X": TOKEN}
    again = subprocess.run(
        [STOCKADE, "image", "build", "-f", str(context / "Dockerfile"), "--name", name],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert again.returncode == 2 and "already exists" in again.stderr


def test_failing_run_leaves_no_template_and_no_build_sandbox(
    daemon: Daemon, context: Path, templates: Callable[[], str]
) -> None:
    name = templates()
    text = f"FROM base\nRUN echo {TOKEN} > /tmp/x\nRUN echo about to fail; exit 3\n"
    with pytest.raises(TemplateBuildError, match="line 3.*exit code 3"):
        build(context, name, text)
    assert build_leftovers(daemon, name) == []
    with pytest.raises(NotFoundError):
        Template.get(name)


def test_cancelled_build_leaves_no_template_and_no_build_sandbox(
    daemon: Daemon, context: Path, templates: Callable[[], str]
) -> None:
    name = templates()
    (context / "Dockerfile").write_text(
        f"FROM base\nRUN echo {TOKEN}; echo running-now; sleep 120\nRUN true\n"
    )

    async def build_then_cancel() -> None:
        running = asyncio.Event()

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "log" and "running-now" in event["data"]:
                running.set()

        task = asyncio.create_task(
            AsyncTemplate.build(str(context / "Dockerfile"), name=name, on_event=on_event)
        )
        await asyncio.wait_for(running.wait(), 60)
        assert build_leftovers(daemon, name)  # the build sandbox is there while it runs
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(build_then_cancel())
    deadline = time.monotonic() + 30
    while build_leftovers(daemon, name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert build_leftovers(daemon, name) == []


def test_copy_cannot_read_outside_the_context(
    daemon: Daemon, context: Path, templates: Callable[[], str]
) -> None:
    (context / "etc-link").symlink_to("/etc")
    (context / "passwd-link").symlink_to("/etc/passwd")
    for source in ("etc-link/passwd", "passwd-link", "etc-link"):
        with pytest.raises(TemplateBuildError, match="line 2.*leads out of the build context"):
            build(context, templates(), f"FROM base\nCOPY {source} /x\n")
    with pytest.raises(InvalidRequestError, match="line 2.*outside the build context"):
        build(context, templates(), "FROM base\nCOPY ../../etc/passwd /x\n")
    # A link inside a copied directory is copied as a link, not followed.
    (context / "data" / "link").symlink_to("/etc/passwd")
    name = templates()
    build(context, name, "FROM base\nCOPY data /d/\n")
    sb = Sandbox.create(template=name, timeout=60)
    try:
        assert sb.commands.run("readlink /d/link").stdout.strip() == "/etc/passwd"
    finally:
        sb.kill()


def test_a_context_tar_cannot_write_outside_its_directory(daemon: Daemon) -> None:
    target = Path(f"/tmp/stockade-escape-{TOKEN}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("out")
        link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
        tar.addfile(link)
        data = b"FROM base\n"
        for member in (f"out/{target.name}", f"../{target.name}", "Dockerfile"):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with daemon.client() as c:
        response = c.post(
            "/templates/build", params={"name": f"tb-{TOKEN}-escape"}, content=buffer.getvalue()
        )
    assert response.status_code == 400, response.text
    assert "outside" in response.json()["message"]
    assert not target.exists()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("FROM base\nADD x /y\n", "line 2: ADD is not supported: use COPY"),
        ("RUN true\n", "line 1: the first instruction must be FROM"),
        ('FROM base\n\nRUN ok\nFOO bar\nCMD ["x"]\n', "line 4: unknown instruction 'FOO'"),
        ("FROM python:3.11\n", "line 1: FROM takes the name of a Stockade template"),
        ("FROM base\nRUN a \\\n", "line 2: the last instruction ends with '\\'"),
        ("FROM nope-nope\nRUN true\n", "line 1: no template 'nope-nope'"),
        ("", "the Dockerfile is empty"),
    ],
)
def test_bad_dockerfiles_are_refused_with_their_line(context: Path, text: str, expected: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        build(context, f"tb-{TOKEN}-bad", text)
    assert expected in str(caught.value)


def test_templates_are_per_tenant(context: Path, tmp_path: Path) -> None:
    from server_harness import Server, finish, needs_root, new_data_dir

    needs_root()
    server = Server(new_data_dir()).start()
    try:
        owner = {"api_url": server.url, "api_key": server.new_key("builder")}
        other = {"api_url": server.url, "api_key": server.new_key("other")}
        name = f"tb-{TOKEN}-tenant"
        (context / "Dockerfile").write_text(f"FROM base\nRUN echo {TOKEN} > /mine\n")
        Template.build(str(context / "Dockerfile"), name=name, **owner)
        assert name in [t.name for t in Template.list(**owner)]
        assert Template.get(name, **owner).owner == "builder"
        # The other tenant sees nothing, cannot use it, build on it or delete it.
        assert name not in [t.name for t in Template.list(**other)]
        with pytest.raises(NotFoundError):
            Template.get(name, **other)
        with pytest.raises(InvalidRequestError, match="no template"):
            Sandbox.create(template=name, timeout=30, **other)
        (context / "Dockerfile").write_text(f"FROM {name}\nRUN true\n")
        with pytest.raises(InvalidRequestError, match="line 1: no template"):
            Template.build(str(context / "Dockerfile"), name=f"{name}-2", **other)
        with pytest.raises(NotFoundError):
            Template.delete(name, **other)
        with pytest.raises(Exception, match="only the admin key"):
            Template.build(str(context / "Dockerfile"), name=f"{name}-3", public=True, **other)
        # Its owner can.
        with Sandbox.create(template=name, timeout=30, **owner) as sb:
            assert sb.commands.run("cat /mine").stdout.strip() == TOKEN
        Template.delete(name, **owner)
        assert Template.prune(**owner)
    finally:
        finish(server)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCKADE_API_URL", raising=False)


def test_prune_waits_for_a_build_of_another_engine_on_the_same_image_store(daemon: Daemon) -> None:
    """Two engines may share an image store (several daemons, or hosts of a one-machine
    cluster): a prune must not remove the cache layer that the other's build steps on."""
    import fcntl
    import threading

    lock = os.open(IMAGES_DIR / ".builds.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_SH)  # what a build of another engine holds while it runs
    done = threading.Event()
    try:
        pruning = threading.Thread(target=lambda: (Template.prune(), done.set()), daemon=True)
        pruning.start()
        assert not done.wait(1.5), "the prune did not wait for the other engine's build"
    finally:
        os.close(lock)
    assert done.wait(60), "the prune did not go on once the build ended"

"""Importing a `docker save` archive or an OCI image layout (skopeo + umoci) as a template."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from stockade import InvalidRequestError, NotFoundError, Sandbox, Template

from tests.conftest import IMAGES_DIR, Daemon

pytestmark = pytest.mark.root
STOCKADE = str(Path(sys.executable).parent / "stockade")
#: Resolved inside the base image: python3, dash and every library they and Python's C
#: modules load.
LIBS = (
    "for f in /usr/bin/python3.11 /usr/bin/dash /usr/lib/python3.11/lib-dynload/*.so; do "
    "ldd \"$f\" | awk '/=>/ {print $3} /ld-linux/ {print $1}'; done | sort -u | "
    'while read -r lib; do echo "$(readlink -f "$(dirname "$lib")")/$(basename "$lib")"; '
    'readlink -f "$lib"; done'
)


def python_rootfs(dest: Path) -> None:
    """A small root filesystem with only python3 and sh, taken from the base image."""
    base = IMAGES_DIR / "base" / "rootfs"
    libs = subprocess.run(
        ["chroot", str(base), "sh", "-c", LIBS], capture_output=True, text=True, check=True
    ).stdout.split()
    paths = [
        "usr/bin/python3.11",
        "usr/bin/python3",
        "usr/bin/dash",
        "usr/bin/sh",
        "usr/lib/python3.11",
        "usr/lib64",
        "bin",
        "lib",
        "lib64",
        *(p.lstrip("/") for p in libs),
    ]
    dest.mkdir()
    subprocess.run(["cp", "-a", "--parents", *paths, str(dest)], cwd=base, check=True)
    (dest / "etc").mkdir()
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\n")
    for d, mode, uid in (
        ("tmp", 0o1777, 0),
        ("root", 0o700, 0),
        ("home/user", 0o755, 1000),
        ("srv", 0o755, 0),
    ):
        (dest / d).mkdir(parents=True)
        os.chmod(dest / d, mode)
        os.chown(dest / d, uid, uid)


def docker_save(rootfs: Path | None, out: Path, files: dict[str, bytes] | None = None) -> Path:
    """A `docker save` archive of one layer: ``rootfs``, or just ``files``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        if rootfs is not None:
            tar.add(rootfs, arcname=".")
        for name, data in (files or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    diff = hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin", "IMPORTED=yes"], "WorkingDir": "/srv", "User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": ["test/py:latest"], "Layers": [f"{diff}/layer.tar"]}]
    ).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in (
            (f"{diff}/layer.tar", layer.getvalue()),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("import")
    python_rootfs(work / "rootfs")
    return docker_save(work / "rootfs", work / "python.tar")


@pytest.fixture
def names(daemon: Daemon) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(f"imp-{secrets.token_hex(4)}")
        return made[-1]

    yield make
    for name in made:
        try:
            Template.delete(name)
        except NotFoundError:
            pass


CHECK = (
    'python3 -c \'import os, pwd; print(os.getcwd(), os.environ["IMPORTED"], '
    "pwd.getpwuid(os.getuid()).pw_name)'"
)


def test_docker_save_archive_becomes_a_template(
    archive: Path, names: Callable[[], str], make_sandbox: Callable[..., Sandbox]
) -> None:
    name = names()
    info = Template.import_image(str(archive), name=name)
    assert info.config == {
        "env": {"PATH": "/usr/bin:/bin", "IMPORTED": "yes"},
        "workdir": "/srv",
        "user": "user",
    }
    for tier in ("container", "gvisor"):
        sb = make_sandbox(template=name, isolation=tier)
        assert sb.commands.run(CHECK).stdout.split() == ["/srv", "yes", "user"]
        assert not sb.files.exists("/usr/bin/apt")  # nothing of the base image
    with pytest.raises(Exception, match="already exists"):
        Template.import_image(str(archive), name=name)


def test_oci_layout_imports_through_the_cli(
    archive: Path, tmp_path: Path, names: Callable[[], str], make_sandbox: Callable[..., Sandbox]
) -> None:
    layout = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", f"docker-archive:{archive}", f"oci:{layout}:v1"],
        check=True,
    )
    name = names()
    result = subprocess.run(
        [STOCKADE, "image", "import", str(layout), "--name", name],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    sb = make_sandbox(template=name, isolation="container")
    assert sb.commands.run(CHECK).stdout.split() == ["/srv", "yes", "user"]


def test_images_without_python_or_not_images_are_refused(tmp_path: Path, names: Callable[[], str]) -> None:
    bare = docker_save(None, tmp_path / "bare.tar", {"etc/hostname": b"bare\n"})
    name = names()
    with pytest.raises(InvalidRequestError, match="the image has no python3"):
        Template.import_image(str(bare), name=name)
    junk = tmp_path / "junk.tar"
    with tarfile.open(junk, "w") as tar:
        tar.add(bare, arcname="something.tar")
    with pytest.raises(InvalidRequestError, match="neither an OCI image layout nor"):
        Template.import_image(str(junk), name=name)
    with pytest.raises(NotFoundError):
        Template.get(name)
    assert not [e for e in os.listdir(IMAGES_DIR) if e.startswith(f".build-{name}-")]

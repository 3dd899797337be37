"""Import an OCI image layout or a ``docker save`` archive as a template.

``skopeo copy`` turns either into an OCI layout (``docker-archive:`` or ``oci:`` transport,
layers and digests checked), ``umoci unpack`` applies its layers into the store's staging
directory, and the image's ``Env``, ``WorkingDir`` and ``User`` become the template's
configuration. The sandbox agent runs on the image's own python3, so an image without one is
refused. Like every image write, the template appears complete or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from ..host import resolve_in_root
from .build import ImageBuildError, _finish_rootfs, _preflight
from .store import _PYTHON_CANDIDATES, ImageExists, ImageInfo, ImageStore, validate_name

TAG = "stockade-import"


def detect(archive: Path) -> str:
    """``"oci"`` for an OCI layout (a directory, or a tar of one) or ``"docker"`` for a
    ``docker save`` tar; ImageBuildError otherwise."""
    if archive.is_dir():
        if (archive / "oci-layout").is_file():
            return "oci"
        raise ImageBuildError(f"{archive} is a directory but not an OCI image layout (no oci-layout file)")
    try:
        with tarfile.open(archive) as tar:
            names = {m.name.lstrip("./") for m in tar.getmembers()}
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageBuildError(f"{archive.name} is not a tar archive: {exc}") from None
    if "oci-layout" in names and "index.json" in names:
        return "oci"
    if "manifest.json" in names:
        return "docker"
    raise ImageBuildError(
        f"{archive.name} is neither an OCI image layout nor a `docker save` "
        f"archive (no oci-layout or manifest.json at its top)"
    )


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-1500:]
        raise ImageBuildError(f"{what} failed: {tail}")


def _source(archive: Path, kind: str, work: Path) -> str:
    """The skopeo source reference for ``archive``."""
    if kind == "docker":
        return f"docker-archive:{archive}"
    if archive.is_dir():
        return f"oci:{archive}"
    unpacked = work / "source"
    unpacked.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    return f"oci:{unpacked}"


def _image_config(layout: Path) -> dict[str, Any]:
    """The OCI image config (``config`` object) of the single image in ``layout``."""

    def blob(digest: str) -> Any:
        algorithm, _, value = digest.partition(":")
        return json.loads((layout / "blobs" / algorithm / value).read_text())

    index = json.loads((layout / "index.json").read_text())
    manifest = blob(index["manifests"][0]["digest"])
    config: dict[str, Any] = blob(manifest["config"]["digest"]).get("config") or {}
    return config


def _user_name(rootfs: Path, user: str) -> str | None:
    """The name of an image's ``User`` (``name``, ``uid``, ``name:group``...) in its passwd."""
    user = user.split(":")[0]
    if not user or not user.isdigit():
        return user or None
    passwd = resolve_in_root(rootfs, "/etc/passwd")
    if passwd is None or not passwd.is_file():
        return None
    for line in passwd.read_text(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == user:
            return fields[0]
    return None


def _config(rootfs: Path, config: dict[str, Any]) -> dict[str, Any]:
    env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    return {
        "env": env,
        "workdir": config.get("WorkingDir") or None,
        "user": _user_name(rootfs, config.get("User") or ""),
    }


def import_image(store: ImageStore, name: str, archive: Path, *, owner: str | None = None) -> ImageInfo:
    """Make template ``name`` from an OCI layout (directory or tar) or a docker-save tar.

    Needs root, skopeo and umoci. Raises :class:`ImageExists` if the name is taken and
    :class:`ImageBuildError` for an unreadable archive or an image without python3."""
    validate_name(name)
    _preflight("skopeo", "umoci")
    archive = Path(archive).resolve()
    kind = detect(archive)
    if store.exists(name):
        raise ImageExists(f"a template named {name!r} already exists")
    with store.staging(name) as staging:
        if store.exists(name):
            raise ImageExists(f"a template named {name!r} already exists")
        work = staging.path / "work"
        work.mkdir()
        layout = work / "layout"
        _run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--quiet",
                _source(archive, kind, work),
                f"oci:{layout}:{TAG}",
            ],
            f"reading the image ({kind} format) with skopeo",
        )
        bundle = work / "bundle"
        _run(
            ["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)],
            "unpacking the image's layers with umoci",
        )
        rootfs = staging.path / "rootfs"
        os.rename(bundle / "rootfs", rootfs)
        if not any(_executable(rootfs, p) for p in _PYTHON_CANDIDATES):
            raise ImageBuildError(
                f"the image has no python3 (looked for {', '.join(_PYTHON_CANDIDATES)}); the "
                f"sandbox agent runs on the image's python3 (3.8 or later): add it to the image "
                f"(e.g. RUN apt-get install -y python3) and export it again"
            )
        config = _config(rootfs, _image_config(layout))
        shutil.rmtree(work)
        _finish_rootfs(rootfs)
        return store.install(
            name, staging, source=f"import of {archive.name} ({kind})", owner=owner, config=config
        )


def _executable(rootfs: Path, path: str) -> bool:
    resolved = resolve_in_root(rootfs, path)
    return resolved is not None and resolved.is_file() and os.access(resolved, os.X_OK)

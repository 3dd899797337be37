"""Templates built on the base image: a copy of it with more Debian packages installed.

A template is data (:class:`Template`): its base image, the packages ``apt-get`` adds, and
commands run afterwards. The build copies the base rootfs into the store's staging directory and
runs apt inside it with ``chroot``, in a private mount namespace, so the mounts it needs (proc,
dev, tmp, resolv.conf) vanish with the build even if it is killed. Like every image write, the
result appears atomically or not at all, and an interrupted build is swept by the next one.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import host
from .build import ImageBuildError, Progress, _finish_rootfs, _preflight, build_base_image, current
from .build import run_staged
from .store import ImageInfo, ImageStore, Staging, validate_name


@dataclass(frozen=True)
class Template:
    """How to make one template from its base image."""

    name: str
    base: str
    packages: tuple[str, ...]
    #: Shell commands run in the chroot as the sandbox user (uid 1000), after the install.
    user_setup: tuple[str, ...] = ()
    description: str = ""


CODE_INTERPRETER = Template(
    name="code-interpreter",
    base="base",
    packages=(
        "python3-ipykernel",
        "python3-jupyter-client",
        "python3-numpy",
        "python3-pandas",
        "python3-matplotlib",
    ),
    # Matplotlib builds its font cache on first import (seconds); do it once, here.
    user_setup=(
        'python3 -c \'import matplotlib; matplotlib.use("agg"); '
        "import matplotlib.pyplot as plt; plt.figure()'",
    ),
    description="a Jupyter kernel (ipykernel) with numpy, pandas and matplotlib",
)

TEMPLATES: dict[str, Template] = {t.name: t for t in (CODE_INTERPRETER,)}

#: Run by ``unshare --mount`` with the new rootfs as "$1" and the packages after it.
INSTALL_SCRIPT = """set -eu
R=$1; shift
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=0755 dev "$R/dev"
mknod -m 0666 "$R/dev/null" c 1 3; mknod -m 0666 "$R/dev/zero" c 1 5
mknod -m 0666 "$R/dev/full" c 1 7; mknod -m 0666 "$R/dev/random" c 1 8
mknod -m 0666 "$R/dev/urandom" c 1 9; ln -s /proc/self/fd "$R/dev/fd"
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
mount --bind /etc/resolv.conf "$R/etc/resolv.conf"
echo "STAGE updating package lists"
chroot "$R" apt-get -q update
echo "STAGE installing packages"
chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends \\
    -o APT::Status-Fd=1 -o Dpkg::Use-Pty=0 install "$@"
chroot "$R" apt-get clean
rm -rf "$R/var/lib/apt/lists/"*
"""

USER_SCRIPT = """set -eu
R=$1; shift
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
for cmd in "$@"; do
    chroot --userspec=1000:1000 "$R" env HOME=/home/user USER=user LANG=C.UTF-8 \\
        PATH=/usr/local/bin:/usr/bin:/bin sh -c "cd; $cmd"
done
"""


def template_names() -> list[str]:
    """The templates this host knows how to build."""
    return sorted(TEMPLATES)


def build_template(
    store: ImageStore, name: str, progress: Progress | None = None, force: bool = False
) -> ImageInfo:
    """Build template ``name`` (see :data:`TEMPLATES`), building its base image first if missing.

    Returns at once if it exists, unless ``force``. Needs root and the Debian mirror. Raises
    :class:`ImageBuildError` (an unknown name included).
    """
    template = TEMPLATES.get(name)
    if template is None:
        raise ImageBuildError(f"no template called {name!r}; choose one of {', '.join(template_names())}")
    validate_name(name)
    report: Progress = progress or (lambda stage, fraction: None)
    # The base first (built, or rebuilt when its package list changed): a template built on
    # an older base is rebuilt too, since the packages it records are no longer the base's.
    base = build_base_image(
        store,
        template.base,
        progress=lambda s, f: report(f"base image: {s}", None if f is None else f * 0.3),
    )
    packages = (*base.packages, *template.packages)
    if not force and (found := current(store, name, packages)):
        return found
    _preflight("unshare", "chroot", "cp")
    with store.staging(name) as staging:
        if not force and (found := current(store, name, packages)):  # built while we waited
            return found
        rootfs = staging.path / "rootfs"
        report(f"copying the {template.base} image", 0.31)
        _copy_tree(base.rootfs, rootfs)
        _run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                host.detach_sandbox_mounts() + "\n" + INSTALL_SCRIPT,
                "sh",
                str(rootfs),
                *template.packages,
            ],
            staging,
            report,
        )
        if template.user_setup:
            report("preparing caches", 0.93)
            _run(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    host.detach_sandbox_mounts() + "\n" + USER_SCRIPT,
                    "sh",
                    str(rootfs),
                    *template.user_setup,
                ],
                staging,
                report,
            )
        report("finishing image", 0.97)
        _finish_rootfs(rootfs)
        info = store.install(
            name,
            staging,
            source=f"template {name} from {template.base}",
            packages=packages,
            replace=store.exists(name),
        )
    report("done", 1.0)
    return info


def _copy_tree(src: Path, dst: Path) -> None:
    result = subprocess.run(
        ["cp", "-a", "--reflink=auto", str(src), str(dst)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ImageBuildError(f"cannot copy {src}: {result.stderr.strip()}")


def parse_apt_status(line: str) -> tuple[str, float | None] | None:
    """Map a line of the build's output to ``(stage, fraction)``; None for noise.

    ``STAGE`` lines come from our script; ``dlstatus``/``pmstatus`` from apt's ``Status-Fd``
    (``kind:package:percent:message``). Downloads map to 35-50 %, dpkg's work to 50-92 %.
    """
    if line.startswith("STAGE "):
        stage = line[6:].strip()
        return stage, 0.33 if stage.startswith("updating") else 0.35
    kind, _, rest = line.partition(":")
    if kind not in ("dlstatus", "pmstatus"):
        return None
    parts = rest.split(":", 2)
    if len(parts) != 3:
        return None
    try:
        percent = max(0.0, min(100.0, float(parts[1])))
    except ValueError:
        return None
    if kind == "dlstatus":
        return "downloading packages", 0.35 + 0.15 * percent / 100
    return f"installing packages: {parts[2].strip()[:60]}", 0.50 + 0.42 * percent / 100


def _run(cmd: list[str], staging: Staging, report: Progress) -> None:
    run_staged(cmd, staging, report, parse_apt_status, "template build step")

"""Building images: the Debian 12 base image with mmdebstrap, and rootfs tarball imports."""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from .. import host
from .store import ImageError, ImageExists, ImageInfo, ImageStore, Staging, validate_name

Progress = Callable[[str, float | None], None]

SUITE = "bookworm"
#: What the base image holds. Changing this list rebuilds the base image at the next
#: ``stockade image build`` (``scripts/install``): see :func:`current`. ``python3-pylsp`` serves
#: Daytona's language-server calls (docs/compat-daytona.md).
PACKAGES = (
    "python3",
    "python3-pip",
    "bash",
    "coreutils",
    "git",
    "curl",
    "ca-certificates",
    "procps",
    "python3-pylsp",
)
USER, USER_ID, HOSTNAME = "user", 1000, "sandbox"

#: Run by mmdebstrap with the new root as "$1", after all packages are installed.
CUSTOMIZE = f"""set -eu
chroot "$1" groupadd --gid {USER_ID} {USER}
chroot "$1" useradd --uid {USER_ID} --gid {USER_ID} --home-dir /home/{USER} --create-home \\
    --shell /bin/bash {USER}
chown {USER_ID}:{USER_ID} "$1/home/{USER}"
install -d -m 0755 -o 0 -g 0 "$1/.stockade"
echo {HOSTNAME} > "$1/etc/hostname"
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t{HOSTNAME}\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' \\
    > "$1/etc/hosts"
rm -f "$1/etc/resolv.conf"
install -m 0644 /dev/null "$1/etc/resolv.conf"
"""

#: mmdebstrap's "I:" messages -> (stage shown to the user, fraction done), by prefix.
STAGES = (
    ("running apt-get update", "updating package lists", 0.01),
    ("downloading packages", "downloading packages", 0.05),
    ("extracting archives", "extracting essential packages", 0.11),
    ("installing essential packages", "installing essential packages", 0.30),
    ("installing remaining packages", "installing packages", 0.58),
    ("running --customize-hook", "creating user and mount points", 0.96),
    ("cleaning package lists", "cleaning up", 0.97),
    ("success in", "bootstrap done", 0.98),
)


class ImageBuildError(ImageError):
    """The build failed; the message ends with the tail of the builder's output."""


def parse_progress(line: str) -> tuple[str, float | None] | None:
    """Map one line of mmdebstrap output to ``(stage, fraction)``; None for noise."""
    line = line.strip()
    if line.startswith("W: "):
        return f"warning: {line[3:]}", None
    if not line.startswith("I: "):
        return None
    message = line[3:].rstrip(".").strip()
    for prefix, stage, fraction in STAGES:
        if message.startswith(prefix):
            return stage, fraction
    return message, None


def build_base_image(
    store: ImageStore,
    name: str = "base",
    progress: Progress | None = None,
    force: bool = False,
) -> ImageInfo:
    """Build the Debian 12 base image ``name`` (needs root and network; 40 s to 2 min).

    Returns at once if the image exists, unless ``force`` (then the new image atomically replaces
    the old one). ``progress(stage, fraction_or_None)`` is called as the build goes. Raises
    :class:`ImageBuildError`. An exception (Ctrl-C included) stops the build and deletes its
    directory; a killed build leaves a hidden directory that the next build of ``name`` deletes.
    """
    validate_name(name)
    report: Progress = progress or (lambda stage, fraction: None)
    if not force and (found := current(store, name, PACKAGES)):
        store.sweep()  # a tree this image replaced while sandboxes used it, if none does now
        return found
    _preflight("mmdebstrap", "unshare")
    with store.staging(name) as staging:
        if not force and (found := current(store, name, PACKAGES)):  # built while we waited
            return found
        report("starting", 0.0)
        rootfs = staging.path / "rootfs"
        _run_mmdebstrap(rootfs, staging, report)
        report("finishing image", 0.98)
        _finish_rootfs(rootfs)
        replace = store.exists(name)  # force, or an image built from an older package list
        info = store.install(name, staging, source=f"mmdebstrap {SUITE}", packages=PACKAGES, replace=replace)
    report("done", 1.0)
    return info


def current(store: ImageStore, name: str, packages: tuple[str, ...]) -> ImageInfo | None:
    """Image ``name`` if it exists and was built from ``packages``; None when it is missing or
    when this host's list has changed since (it is then rebuilt in place). An image of that
    name that was not built here (imported) counts as current whatever it holds."""
    if not store.exists(name):
        return None
    info = store.get(name)
    built_here = info.source.startswith(("mmdebstrap ", "template "))
    return info if info.packages == packages or not built_here else None


def _preflight(*tools: str) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building an image needs root")
    for tool in tools:
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} is not installed (apt-get install {tool})")


def _run_mmdebstrap(rootfs: Path, staging: Staging, report: Progress) -> None:
    # A private mount namespace: mounts made by the build die with it, even if it is killed;
    # it lets go of its copies of the sandboxes' mounts first (host.detach_sandbox_mounts).
    cmd = [
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", host.detach_sandbox_mounts() + '; exec "$@"', "sh",
        "mmdebstrap", "--mode=root", "--variant=apt", f"--include={','.join(PACKAGES)}",
        f"--customize-hook={CUSTOMIZE}", SUITE, str(rootfs),
    ]  # fmt: skip
    run_staged(cmd, staging, report, parse_progress, "mmdebstrap")


def run_staged(
    cmd: list[str],
    staging: Staging,
    report: Progress,
    parse: Callable[[str], tuple[str, float | None] | None],
    what: str,
) -> None:
    """Run one build command in its own process group, reporting progress from its output;
    stop the whole group if we are interrupted, and raise with the output's tail on failure."""
    tail: collections.deque[str] = collections.deque(maxlen=30)
    # The child inherits the build lock, so the lock outlives us if we die before it does.
    with subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        pass_fds=(staging.lock_fd,),
        start_new_session=True,  # its own process group, so _stop reaches apt and dpkg too
        # TMPDIR: the command's own temporary files go with the staging directory too.
        env={**os.environ, "LC_ALL": "C.UTF-8", "TMPDIR": str(staging.path)},
    ) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip())
                parsed = parse(line)
                if parsed is not None:
                    report(*parsed)
            rc = proc.wait()
        except BaseException:
            _stop(proc)
            raise
    if rc != 0:
        output = "\n".join(tail)
        raise ImageBuildError(f"{what} failed with exit status {rc}:\n{output}")


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop the build's whole process group: SIGTERM, then SIGKILL after a short grace.

    Its mounts live in its private mount namespace and vanish with its last process.
    """
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # mmdebstrap is gone; make sure apt and dpkg are too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return


def _finish_rootfs(rootfs: Path) -> None:
    """Drop device nodes from /dev (runtimes provide their own) and ensure /.stockade exists."""
    dev = rootfs / "dev"
    if dev.is_dir() and not dev.is_symlink():
        for entry in os.scandir(dev):
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.unlink(entry.path)
    mountpoint = rootfs / ".stockade"
    if not os.path.lexists(mountpoint):
        mountpoint.mkdir()
        os.chmod(mountpoint, 0o755)


def import_rootfs_tar(store: ImageStore, name: str, tar_path: Path, *, force: bool = False) -> ImageInfo:
    """Make image ``name`` from a (trusted) rootfs tarball, any compression GNU tar reads.

    Ownership, modes and xattrs are kept as stored. Raises :class:`ImageExists` unless ``force``.
    """
    validate_name(name)
    tar_path = Path(tar_path).resolve()
    if not force and store.exists(name):
        raise ImageExists(f"image {name!r} already exists")
    with store.staging(name) as staging:
        rootfs = staging.path / "rootfs"
        rootfs.mkdir(mode=0o755)
        cmd = [
            "tar", "--extract", f"--file={tar_path}", f"--directory={rootfs}", "--numeric-owner",
            "--same-owner", "--preserve-permissions", "--xattrs", "--xattrs-include=*",
        ]  # fmt: skip
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            raise ImageBuildError(f"cannot extract {tar_path}: {result.stderr.strip()}")
        _finish_rootfs(rootfs)
        return store.install(name, staging, source=f"tar {tar_path.name}", replace=force)

"""What a microVM boots: Debian's kernel, a busybox initramfs, and an ext4 disk per image.

Everything lives under ``<images_dir>/_guest`` (a name the image store never lists)::

    _guest/kernel/{vmlinux, kernel.json, modules/*.ko}   from linux-image-*-amd64
    _guest/initrd-<hash>.img                             busybox + modules + /init + the agent
    _guest/disks/<image>-<stamp>.ext4                    the image's rootfs, read-only, shared

Each piece is built in a hidden sibling and renamed into place, so readers see it whole or not
at all. The initramfs is keyed by a hash of what goes into it (agent code included), so a new
agent version makes a new one; an image disk is keyed by the image's creation time, so a rebuilt
image makes a new disk. See docs/microvm.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import host
from .store import ImageError, ImageStore

Progress = Callable[[str, float | None], None]

#: Debian's generic flavour: the cloud flavour has no 9p, which volumes need (docs/microvm.md).
KERNEL_PACKAGE = "linux-image-amd64"
#: Modules the guest loads, with their dependencies (ext4 needs crc32c, found by name at mount).
MODULES = (
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "virtio_rng",
    "crc32c_generic",
    "ext4",
    "overlay",
    "virtio_net",
    "9pnet_virtio",
    "9p",
)
BUSYBOX = Path("/bin/busybox")
#: The virtio-serial port name the agent serves on (agent/serial.py looks for it).
AGENT_PORT = "org.stockade.agent"
#: 9p mount tag of the read-only share holding the guest's network and volume settings.
CONFIG_TAG = "stockade.cfg"
PROBE_OK = "STOCKADE-PROBE-OK"
INIT_FAILED = "STOCKADE-INIT-FAILED"
#: Seconds an initramfs of another version is kept after a new one is built.
OLD_INITRD_AGE = 24 * 3600

INIT = r"""#!/bin/busybox sh
# Stockade guest init: load virtio modules, build the overlay root, start the agent as PID 1.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs -o nosuid devtmpfs /dev
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
fail() { echo "__FAILED__: $*"; dmesg | tail -n 15; reboot -f; sleep 5; }
die() { fail "$@"; }
HOST=sandbox; PY=/usr/bin/python3; MMIO=; CFG=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        virtio_mmio.device=*) MMIO="$MMIO device=${arg#*=}" ;;
        stockade.hostname=*) HOST="${arg#*=}" ;;
        stockade.python=*) PY="${arg#*=}" ;;
        stockade.cfg=1) CFG=1 ;;
        stockade.probe=1) echo "__PROBE__"; reboot -f; sleep 5 ;;
    esac
done
# insmod, unlike modprobe, does not read module parameters from the kernel command line
for m in $(cat /lib/modules/order); do
    args=; [ "$m" = virtio_mmio ] && args="$MMIO"
    insmod "/lib/modules/$m.ko" $args || fail "cannot load $m"
done
RO=; RW=
for i in $(seq 100); do
    for d in /sys/block/vd*; do
        [ -e "$d/ro" ] || continue
        if [ "$(cat "$d/ro")" = 1 ]; then RO="${d##*/}"; else RW="${d##*/}"; fi
    done
    [ -n "$RO" ] && [ -n "$RW" ] && break
    sleep 0.05
done
[ -n "$RO" ] && [ -n "$RW" ] || fail "disks not found (read-only: '$RO', writable: '$RW')"
mount -t ext4 -o ro,noload "/dev/$RO" /mnt/lower || fail "cannot mount the image disk"
mount -t ext4 -o nosuid,nodev "/dev/$RW" /mnt/rw || fail "cannot mount the writable disk"
mkdir -p /mnt/rw/upper /mnt/rw/work
R=/newroot
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work overlay $R \
    || fail "cannot mount the overlay root"
[ -x "$R$PY" ] || fail "no $PY in the image"
mkdir -p $R/proc $R/sys $R/dev $R/tmp $R/.stockade
mount -t tmpfs -o nosuid,nodev,mode=0755,size=8m tmpfs $R/.stockade
cp -a /agent $R/.stockade/agent || fail "cannot install the agent"
# The settings stage (network, volumes; SETTINGS below), kept in the new root with the busybox
# applets it uses, so that the agent can run it again in a guest restored from a template.
mkdir -p $R/.stockade/bin && cp /bin/busybox /settings.sh $R/.stockade/ \
    || fail "cannot install the settings stage"
for a in sh mount umount ip cp mkdir rm touch seq sleep cat; do ln -s ../busybox $R/.stockade/bin/$a; done
[ -n "$CFG" ] && . /settings.sh
mount -o remount,ro,nosuid,nodev $R/.stockade || fail "cannot seal /.stockade"
mount --move /dev $R/dev && mount --move /proc $R/proc && mount --move /sys $R/sys \
    || fail "cannot move /dev, /proc, /sys"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5 devpts $R/dev/pts
ln -sf pts/ptmx $R/dev/ptmx 2>/dev/null
mount -t tmpfs -o nosuid,nodev,noexec,mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs $R/tmp
hostname "$HOST"
ip link set lo up
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
exec switch_root $R "$PY" -I -S -c \
    "import sys; sys.path[:0] = ['/.stockade']; from agent.main import main; main(['--device', 'auto'])"
""".replace("__FAILED__", INIT_FAILED).replace("__PROBE__", PROBE_OK)

#: The settings stage: apply the host's read-only 9p settings share (runtimes/qemu_devices.py)
#: to the root ``$R``: the guest's address and routes, resolver and CA bundle, and its volumes.
#: The share is copied and unmounted at once: QEMU cannot save the memory of a guest with a 9p
#: share mounted. Sourced by init (``die`` reboots); run again by the agent's ``sys.setup``
#: with ``R=`` in a guest restored from a snapshot template (its devices there, unset).
SETTINGS = r"""
mount9p() {  # TAG DIR OPTIONS: the virtio transport may still be probing, so retry a little
    for i in $(seq 100); do
        mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$3" "$1" "$2" 2>/dev/null \
            && return 0
        sleep 0.05
    done
    return 1
}
bindfile() {  # SOURCE TARGET: a read-only bind over a file of the new root
    t="$R$2"; rm -f "$t" 2>/dev/null; [ -L "$t" ] && rm -f "$t"
    mkdir -p "${t%/*}" && touch "$t" && mount --bind "$1" "$t" \
        && mount -o remount,bind,ro,nosuid,nodev,noexec "$t"
}
C=$R/.stockade/cfg; M=$R/.stockade/share
mkdir -p $M $C
mount9p __CFGTAG__ $M ro,nosuid,nodev,noexec && cp $M/* $C/ && umount $M && rmdir $M \
    || die "cannot read the settings share"
if [ -s $C/net ]; then
    read -r ADDR GW < $C/net
    for i in $(seq 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.05; done
    ip link set eth0 up && ip addr add "$ADDR/32" dev eth0 && ip route add "$GW" dev eth0 \
        && ip route add default via "$GW" dev eth0 || die "cannot configure eth0"
    bindfile $C/resolv.conf /etc/resolv.conf || die "cannot install resolv.conf"
    [ -s $C/ca.crt ] && { bindfile $C/ca.crt /etc/ssl/certs/ca-certificates.crt \
        || die "cannot install the CA bundle"; }
fi
while read -r tag mode path; do
    [ -n "$tag" ] || continue
    mkdir -p "$R$path" && mount9p "$tag" "$R$path" "$mode,nosuid,nodev" \
        || die "cannot mount volume $tag at $path"
done < $C/volumes
""".replace("__CFGTAG__", CONFIG_TAG)


class GuestError(ImageError):
    """The guest kernel, initramfs or an image disk could not be built or is missing."""


@dataclass(frozen=True)
class GuestKernel:
    """An installed guest kernel and the modules the initramfs loads, in load order."""

    version: str
    package: str
    vmlinux: Path  # the uncompressed ELF kernel: QEMU boots it through its PVH entry point
    modules: tuple[Path, ...]


def guest_dir(images_dir: Path) -> Path:
    return Path(images_dir) / "_guest"


def _quiet(stage: str, fraction: float | None) -> None:
    pass


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with host.flocked(path):
        yield


def _run(*argv: str, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=600,
        )
    except FileNotFoundError:
        raise GuestError(f"{argv[0]} is not installed") from None
    if result.returncode != 0:
        raise GuestError(
            f"{' '.join(argv[:3])} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result.stdout


# -- the kernel ------------------------------------------------------------------------------


def load_kernel(images_dir: Path) -> GuestKernel:
    """The installed guest kernel, or GuestError saying how to install it."""
    d = guest_dir(images_dir) / "kernel"
    try:
        meta = json.loads((d / "kernel.json").read_text())
    except (OSError, ValueError):
        raise GuestError(
            f"no microVM guest kernel in {d.parent}; build it with "
            f"'stockade image build --guest' (scripts/install does)"
        ) from None
    if not set(MODULES) <= set(meta.get("modules", ())):
        raise GuestError(
            f"the microVM guest kernel in {d.parent} lacks modules this version "
            f"needs ({', '.join(sorted(set(MODULES) - set(meta['modules'])))}); "
            f"rebuild it with 'stockade image build --guest' (scripts/install does)"
        )
    return GuestKernel(
        version=meta["version"],
        package=meta["package"],
        vmlinux=d / "vmlinux",
        modules=tuple(d / "modules" / f"{m}.ko" for m in meta["modules"]),
    )


def build_kernel(images_dir: Path, progress: Progress = _quiet, force: bool = False) -> GuestKernel:
    """Download Debian's kernel package and keep its vmlinuz and the modules we need."""
    base = guest_dir(images_dir)
    with _locked(base / ".kernel.lock"):
        if not force:
            with contextlib.suppress(GuestError):
                return load_kernel(images_dir)
        progress("finding the kernel package", 0.02)
        package = _kernel_package()
        staging = Path(tempfile.mkdtemp(prefix=".build-kernel-", dir=base))
        try:
            progress(f"downloading {package}", 0.05)
            download = staging / "deb"
            download.mkdir()
            os.chmod(download, 0o777)  # apt's sandbox user writes here
            _run("apt-get", "download", "-q", package, cwd=download)
            debs = list(download.glob("*.deb"))
            if len(debs) != 1:
                raise GuestError(f"apt-get download {package} gave {len(debs)} packages")
            progress("extracting the kernel", 0.5)
            tree = staging / "tree"
            _run("dpkg-deb", "-x", str(debs[0]), str(tree))
            version = package.removeprefix("linux-image-")
            out = staging / "kernel"
            (out / "modules").mkdir(parents=True)
            _extract_vmlinux(tree / "boot" / f"vmlinuz-{version}", out / "vmlinux")
            order = _copy_modules(tree / "lib" / "modules" / version, out / "modules")
            (out / "kernel.json").write_text(
                json.dumps({"version": version, "package": package, "modules": order}, indent=2)
            )
            for p in [out, out / "modules", *out.rglob("*")]:
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
            _replace_dir(out, base / "kernel")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        progress("kernel ready", 0.6)
        return load_kernel(images_dir)


def _extract_vmlinux(bzimage: Path, target: Path) -> None:
    """Uncompress the ELF kernel inside a bzImage (microvm needs PVH boot to find ACPI tables)."""
    data = bzimage.read_bytes()
    for magic, argv in (
        (b"\x02\x21\x4c\x18", ["lz4", "-dc"]),
        (b"\xfd7zXZ\x00", ["xz", "-dc"]),
        (b"\x28\xb5\x2f\xfd", ["zstd", "-dc"]),
        (b"\x1f\x8b\x08", ["gzip", "-dc"]),
    ):
        start = data.find(magic)
        if start < 0:
            continue
        with open(target, "wb") as out:
            # The payload is followed by bzImage trailer bytes, which the decompressors report
            # as garbage after the end: judge by the result, not the exit status.
            subprocess.run(argv, input=data[start:], stdout=out, stderr=subprocess.DEVNULL)
        with open(target, "rb") as f:
            if f.read(4) == b"\x7fELF":
                return
    raise GuestError(f"cannot find an ELF kernel inside {bzimage} (is lz4 installed?)")


def _kernel_package() -> str:
    out = _run("apt-cache", "depends", KERNEL_PACKAGE)
    found = re.findall(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)", out)
    if not found:
        raise GuestError(f"apt-cache knows no {KERNEL_PACKAGE}; run apt-get update")
    return str(found[0])


def _module_index(root: Path) -> dict[str, Path]:
    return {p.name.removesuffix(".ko").replace("-", "_"): p for p in root.rglob("*.ko")}


def _depends(ko: Path) -> list[str]:
    match = re.search(rb"\x00depends=([^\x00]*)\x00", b"\x00" + ko.read_bytes())
    names = match.group(1).decode().split(",") if match else []
    return [n.replace("-", "_") for n in names if n]


def _copy_modules(root: Path, dest: Path) -> list[str]:
    """Copy MODULES and their dependencies; return their names in load order."""
    index = _module_index(root)
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in index:
            raise GuestError(f"kernel module {name} not found under {root}")
        if name in path:
            raise GuestError(f"circular module dependency: {' -> '.join(path + (name,))}")
        for dep in _depends(index[name]):
            visit(dep, path + (name,))
        order.append(name)
        shutil.copyfile(index[name], dest / f"{name}.ko")

    for module in MODULES:
        visit(module, ())
    return order


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``, moving any old ``target`` aside first."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        os.rename(target, old)
    os.rename(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- the initramfs ---------------------------------------------------------------------------


class _Cpio:
    """A newc cpio archive, written in memory (the initramfs is a few MB)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.buf.write(b"\0" * (-self.buf.tell() % 4) + data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def char(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _agent_files(agent_dir: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(Path(agent_dir).glob("*.py"))]


def initramfs(images_dir: Path, agent_dir: Path) -> Path:
    """The initramfs for the installed kernel and this agent (built once, then cached)."""
    kernel = load_kernel(images_dir)
    agent = _agent_files(agent_dir)
    busybox = BUSYBOX.read_bytes() if BUSYBOX.exists() else b""
    if not busybox:
        raise GuestError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    digest = hashlib.sha256()
    for part in (
        INIT.encode(),
        SETTINGS.encode(),
        kernel.version.encode(),
        busybox,
        *(m.read_bytes() for m in kernel.modules),
        *(n.encode() + d for n, d in agent),
    ):
        digest.update(hashlib.sha256(part).digest())
    target = guest_dir(images_dir) / f"initrd-{digest.hexdigest()[:16]}.img"
    if target.exists():
        return target
    cpio = _Cpio()
    for d in (
        "bin",
        "dev",
        "proc",
        "sys",
        "mnt",
        "mnt/lower",
        "mnt/rw",
        "newroot",
        "lib",
        "lib/modules",
        "agent",
    ):
        cpio.dir(d)
    cpio.char("dev/console", 5, 1)
    cpio.char("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    cpio.file("settings.sh", SETTINGS.encode(), 0o644)
    for module in kernel.modules:
        cpio.file(f"lib/modules/{module.name}", module.read_bytes())
    cpio.file("lib/modules/order", "\n".join(m.stem for m in kernel.modules).encode() + b"\n")
    for name, data in agent:
        cpio.file(f"agent/{name}", data)
    _write_atomic(target, cpio.finish())
    # Old versions go once a day old: engines of another version may share this directory
    # (and rebuild theirs when it is gone); running VMs keep their open copy.
    horizon = time.time() - OLD_INITRD_AGE
    for old in target.parent.glob("initrd-*.img"):
        with contextlib.suppress(OSError):
            if old != target and old.stat().st_mtime < horizon:
                old.unlink()
    return target


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.rename(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- image disks -----------------------------------------------------------------------------


def image_disk(store: ImageStore, name: str, progress: Progress = _quiet) -> Path:
    """The read-only ext4 disk of image ``name``, shared by every microVM of that image."""
    stamp = hashlib.sha256(_layers_stamp(store, name).encode()).hexdigest()[:12]
    disks = guest_dir(store.root) / "disks"
    target = disks / f"{name}-{stamp}.ext4"
    if target.exists():
        return target
    with _locked(disks / f".{name}.lock"):
        if target.exists():
            return target
        progress(f"making the disk of image {name}", None)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=disks)
        os.close(fd)
        try:
            with _flattened(store, name) as rootfs:
                used, files = _tree_size(rootfs)
                size_mb = (used * 23 // 20 >> 20) + 64
                _run(
                    "mke2fs",
                    "-q",
                    "-F",
                    "-t",
                    "ext4",
                    "-O",
                    "^has_journal,^resize_inode",
                    "-m",
                    "0",
                    "-N",
                    str(files * 11 // 10 + 1024),
                    "-L",
                    "stockade-image",
                    "-d",
                    str(rootfs),
                    "-E",
                    "root_owner=0:0,nodiscard",
                    tmp,
                    f"{size_mb}M",
                )
            os.chmod(tmp, 0o644)
            os.rename(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        for old in disks.glob(f"{name}-*.ext4"):
            if old != target:
                with contextlib.suppress(OSError):
                    old.unlink()  # a running VM keeps its open copy; new VMs use the new disk
        progress(f"disk of image {name} ready", None)
        return target


def _layers_stamp(store: ImageStore, name: str) -> str:
    """What an image disk is keyed by: the image's creation time, and its parents' too for a
    layered image (a snapshot), whose disk holds every layer."""
    info = store.get(name)
    if info.parent is None:
        return info.created.isoformat()
    stamps = []
    current: str | None = name
    while current is not None:
        info = store.get(current)
        stamps.append(f"{current}@{info.created.isoformat()}")
        current = info.parent
    return "|".join(stamps)


@contextlib.contextmanager
def _flattened(store: ImageStore, name: str) -> Iterator[Path]:
    """The image's whole tree: its rootfs, or for a layered image (a snapshot: its own layer
    over its parents') a read-only overlay of its layers, so whiteouts hide what they delete."""
    layers = store.layers(name)
    if len(layers) == 1:
        yield layers[0]
        return
    mnt = Path(tempfile.mkdtemp(prefix="stockade-flat-"))
    try:
        _run(
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            "ro,lowerdir=" + ":".join(str(p) for p in layers),
            str(mnt),
        )
        try:
            yield mnt
        finally:
            _run("umount", str(mnt))
    finally:
        with contextlib.suppress(OSError):
            mnt.rmdir()


def _tree_size(root: Path) -> tuple[int, int]:
    used = files = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            files += 1
            with contextlib.suppress(OSError):
                used += os.lstat(os.path.join(dirpath, n)).st_blocks * 512 + 256
    return used, files


def build_guest(
    store: ImageStore,
    agent_dir: Path,
    images: tuple[str, ...] = ("base",),
    progress: Progress = _quiet,
    force: bool = False,
) -> GuestKernel:
    """Build everything a microVM needs: kernel, initramfs, and the disks of ``images``."""
    kernel = build_kernel(store.root, progress, force)
    progress("building the initramfs", 0.65)
    initramfs(store.root, agent_dir)
    for i, name in enumerate(images):
        if store.exists(name):
            progress(f"making the disk of image {name}", 0.7 + 0.3 * i / len(images))
            image_disk(store, name)
    progress("guest ready", 1.0)
    return kernel

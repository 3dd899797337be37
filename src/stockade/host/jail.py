"""The microVM jailer: run QEMU unprivileged, alone in its namespaces, seeing only its own files.

Like Firecracker's jailer, it is a separate, small program that does not depend on the VMM. The
driver starts it as ``unshare --mount --pid --net --ipc --uts --fork --kill-child --propagation
private -- python -I -S jail.py SPEC``, so it runs as PID 1 of a new PID namespace with an empty
network namespace and a private mount namespace; a networked microVM's jail is started with
``nsenter --net=<the sandbox's namespace>`` and ``unshare`` without ``--net`` instead, so that
QEMU can open its tap device there (runtimes/qemu_devices.py). It then:

1. joins the sandbox's cgroups (memory, CPU, pids), which QEMU inherits;
2. builds a new root on a tmpfs: read-only binds of /usr (QEMU and its libraries), of the guest
   kernel, initramfs and image disk, a read-write bind of the VM's own directory, and fresh
   device nodes (null, zero, urandom, kvm when used, net/tun when networked) owned by the
   VM's uid, and the binds of the settings share and volumes (qemu_devices.py), with a
   procfs of its own PID namespace reduced to process directories when there are volumes
   (QEMU's 9p server needs /proc/self/fd);
3. ``pivot_root``s into it, detaches the old root and makes the new one read-only;
4. sets rlimits, drops every capability from the bounding set, switches to the VM's uid and gid
   with no supplementary groups, sets no_new_privs, and execs QEMU (which then turns on its own
   seccomp filter with ``-sandbox on,...``).

Standard library only, so it starts fast and can be read in one sitting. SPEC is a JSON file
written by the driver (runtimes/qemu.py); host-side helpers for cgroups live here too.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def _bind(source: str, target: Path, writable: bool) -> None:
    if os.path.isdir(source):
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    _mount(source, str(target), None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
    _mount("none", str(target), None, flags)


# -- cgroups (used by the driver, on the host) -------------------------------------------------


def cgroup_v2() -> bool:
    """Whether the host uses the unified hierarchy only."""
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def create_cgroup(relative: str, memory_bytes: int, cpu: float, pids: int) -> list[str]:
    """Create the VM's cgroup with its limits; return the directories the jail joins."""
    period = 100_000
    quota = max(1000, int(cpu * period))
    if cgroup_v2():
        parts = Path(relative).parts
        for i in range(len(parts)):
            parent = CGROUP_ROOT.joinpath(*parts[:i])
            (parent / parts[i]).mkdir(exist_ok=True)
            (parent / "cgroup.subtree_control").write_text("+memory +cpu +pids")
        d = CGROUP_ROOT / relative
        (d / "memory.max").write_text(str(memory_bytes))
        if (d / "memory.swap.max").exists():
            (d / "memory.swap.max").write_text("0")
        (d / "cpu.max").write_text(f"{quota} {period}")
        (d / "pids.max").write_text(str(pids))
        return [str(d)]
    limits = {
        "memory": {"memory.limit_in_bytes": memory_bytes},
        "cpu": {"cpu.cfs_period_us": period, "cpu.cfs_quota_us": quota},
        "cpuacct": {},
        "pids": {"pids.max": pids},
    }
    dirs = []
    for controller, files in limits.items():
        d = CGROUP_ROOT / controller / relative
        if not (CGROUP_ROOT / controller).is_dir():
            continue
        d.mkdir(parents=True, exist_ok=True)
        for name, value in files.items():
            (d / name).write_text(str(value))
        dirs.append(str(d))
    if not any(d.startswith(str(CGROUP_ROOT / "memory")) for d in dirs):
        raise OSError("no memory cgroup controller on this host; the microVM tier needs one")
    return dirs


# -- the jail (runs inside the new namespaces) ------------------------------------------------


def build_root(spec: dict) -> None:  # type: ignore[type-arg]
    """Make the new root at spec['root'] and pivot into it."""
    root = Path(spec["root"])
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", str(root), "tmpfs", MS_NOSUID, "mode=0755,size=1m")
    for name in ("usr", "dev", "tmp"):
        (root / name).mkdir()
    for link in ("lib", "lib64", "bin"):
        if os.path.islink(f"/{link}"):
            os.symlink(os.readlink(f"/{link}"), root / link)
    _bind("/usr", root / "usr", writable=False)
    if os.path.exists("/etc/ld.so.cache"):
        _bind("/etc/ld.so.cache", root / "etc" / "ld.so.cache", writable=False)
    for source, target, writable in spec["binds"]:
        _bind(source, root / target.lstrip("/"), writable)
    if spec.get("proc"):
        # QEMU's 9p server reaches files through /proc/self/fd/N/...: a procfs of the jail's own
        # PID namespace, with nothing but the process directories (no /proc/sys, kcore, ...).
        (root / "proc").mkdir()
        _mount(
            "proc",
            str(root / "proc"),
            "proc",
            MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "hidepid=invisible,subset=pid",
        )
    uid, gid = spec["uid"], spec["gid"]
    for name, major, minor in spec["devices"]:
        path = root / "dev" / name
        path.parent.mkdir(exist_ok=True)
        os.mknod(path, 0o600 | 0o020000, os.makedev(major, minor))
        os.chown(path, uid, gid)
    old = root / ".old"
    old.mkdir()
    _check(_libc.syscall(155, str(root).encode(), str(old).encode()), "pivot_root")  # SYS_pivot_root
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount the old root")
    os.rmdir("/.old")
    _mount("none", "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID)


def drop_privileges(spec: dict) -> None:  # type: ignore[type-arg]
    for name, value in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL
            _check(-1, f"drop capability {cap}")
    uid, gid = spec["uid"], spec["gid"]
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def main(argv: list[str]) -> None:
    with open(argv[1]) as f:
        spec = json.load(f)
    for d in spec["cgroups"]:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write("0")
    os.umask(0o022)  # the jail's directories must be traversable by QEMU's uid
    build_root(spec)
    drop_privileges(spec)
    os.umask(spec.get("umask", 0o077))
    os.execv(spec["argv"][0], spec["argv"])


if __name__ == "__main__":
    try:
        main(sys.argv)
    except OSError as exc:
        print(f"stockade-jail: {exc}", file=sys.stderr)
        sys.exit(70)

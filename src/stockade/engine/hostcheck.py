"""Find what sandboxes left on the host: mounts, loop devices, cgroups, processes, state, files,
network namespaces, veths, nft chains and resolver state.

Used after every test and by ``stockade doctor``; the target everywhere is an empty list.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..net import find_net_leaks
from .. import host


def _processes_in_cgroup(fragment: str) -> list[int]:
    """Live processes in matching cgroups (zombies already released everything but a pid)."""
    pids = []
    for cgroup in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            if fragment in cgroup.read_text():
                state = (cgroup.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(cgroup.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _cmdline(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f"{cmd} state={stat[0]} ppid={stat[1]}"
    except OSError:
        return "gone"


def _runtime_commands(root: Path, name: str) -> list[str]:
    """runc/runsc command lines still running against ``root`` (for sandbox ``name``): a
    checkpoint, pause or delete the engine started and then lost (they live outside the
    sandbox's cgroup)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = entry.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        roots = [a.removeprefix("--root=") for a in argv]
        if (
            Path(argv[0]).name in ("runc", "runsc")
            and any(a.startswith(str(root)) for a in roots)
            and (not name or name in argv)
        ):
            found.append(f"runtime command {entry.parent.name} ({' '.join(argv)[:160]})")
    return found


def _runtime_containers(binary: str, root: Path) -> list[str]:
    if not root.is_dir():
        return []
    try:
        out = subprocess.run(
            [binary, "--root", str(root), "list", "--quiet"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.split() if line]


def cgroup_parent_left(data_dir: Path) -> list[str]:
    """The data directory's cgroup parent, if an engine that ended with no sandbox left it."""
    return [f"cgroup parent {d}" for d in host.cgroup_dirs(host.cgroup_parent(data_dir))]


def find_leaks(data_dir: Path, sandbox_id: str | None = None) -> list[str]:
    """Everything left behind by ``sandbox_id`` (or by any sandbox not running, if None)."""
    name = sandbox_id or ""
    leaks: list[str] = []
    sandboxes = data_dir / "sandboxes"
    where = sandboxes / name if name else sandboxes
    for point in host.mounts_under(where):
        if point != where:
            leaks.append(f"mount {point}")
    if not name:
        leaks.extend(f"volume mount {point}" for point in host.mounts_under(data_dir / "volumes"))
    for backing in host.loop_backing_files():
        if backing.startswith(str(where)):
            leaks.append(f"loop device backed by {backing}")
    parent = host.cgroup_parent(data_dir)
    for d in host.cgroup_dirs(f"{parent}/{name}".rstrip("/")):
        children = [c for c in d.iterdir() if c.is_dir()] if not name else [d]
        leaks.extend(f"cgroup {c}" for c in children)
    for pid in _processes_in_cgroup(f"/{parent}/{name}"):
        leaks.append(f"process {pid} ({_cmdline(pid)}) in a stockade cgroup")
    for tier, binary in (("container", "runc"), ("gvisor", "runsc")):
        for cid in _runtime_containers(binary, data_dir / "runtime" / tier):
            if not name or cid == name:
                leaks.append(f"{binary} container {cid}")
    leaks.extend(_runtime_commands(data_dir / "runtime", name))
    for record in (data_dir / "runtime" / "microvm").glob(f"{name or '*'}.json"):
        leaks.append(f"microVM record {record}")
    leaks.extend(find_net_leaks(data_dir, sandbox_id))
    if name and where.exists():
        leaks.append(f"directory {where}")
    elif not name and sandboxes.is_dir():
        leaks.extend(f"directory {d}" for d in sandboxes.iterdir())
    return leaks

"""Privileged host operations, in one place: mounts and loop devices, sandbox disks, cgroups,
file locks, ownership shifts, host commands and child processes, the reaper of the runtimes' orphans and the
microVM jailer (``jail.py``, a standalone program).

Everything here needs root on the host and knows nothing of sandboxes beyond paths, ids and
uids; the runtimes, the image store and the engine call it. Failures raise :class:`HostError`
(``runtimes.DriverError`` is the same class). The network's own namespaces and nftables rules
stay in :mod:`stockade.net`.
"""

from .cgroups import (
    CGROUP_ROOT,
    Stats,
    cgroup_dirs,
    cgroup_oom_kills,
    cgroup_parent,
    cgroup_pids,
    cgroup_stats,
    empty_cgroup,
    kill_cgroup,
    oom_victim,
    remove_cgroup,
)
from .commands import run
from .disks import make_disk
from .errors import HostError
from .files import exchange, random_suffix, resolve_in_root, safe_rmtree, syncfs, tree_stats, unshift_owners
from .locks import acquire, flocked, flocked_async, lock_holders
from .spawn import Child, spawn
from .mounts import (
    detach_sandbox_mounts,
    loop_backing_files,
    loop_released,
    mount_loop,
    mount_overlay,
    mounted,
    mounted_disk,
    mounts_under,
    mounts_using,
    unmount,
)

__all__ = [
    "CGROUP_ROOT",
    "Child",
    "HostError",
    "Stats",
    "acquire",
    "cgroup_dirs",
    "cgroup_oom_kills",
    "cgroup_parent",
    "cgroup_pids",
    "cgroup_stats",
    "detach_sandbox_mounts",
    "empty_cgroup",
    "exchange",
    "flocked",
    "flocked_async",
    "kill_cgroup",
    "lock_holders",
    "loop_backing_files",
    "loop_released",
    "make_disk",
    "mount_loop",
    "mount_overlay",
    "mounted",
    "mounted_disk",
    "mounts_under",
    "mounts_using",
    "oom_victim",
    "random_suffix",
    "remove_cgroup",
    "resolve_in_root",
    "run",
    "safe_rmtree",
    "spawn",
    "syncfs",
    "tree_stats",
    "unmount",
    "unshift_owners",
]

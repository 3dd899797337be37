# attack: mount filesystems (tmpfs, proc, sysfs, a cgroup v1 hierarchy, the host disk)
# users: user root
# expect-microvm: user=blocked root=contained
import ctypes
import os

from _lib import canary_paths, privileged, syscall, try_read

results, leaked = {}, []
for source, fstype in (
    ("tmpfs", "tmpfs"),
    ("proc", "proc"),
    ("sysfs", "sysfs"),
    ("cgroup", "cgroup"),
    ("/dev/vda", "ext4"),
    ("/dev/vdb", "ext4"),
):
    target = f"/tmp/m-{fstype}-{os.path.basename(source)}"
    os.makedirs(target, exist_ok=True)
    _, err = syscall(
        "mount",
        ctypes.c_char_p(source.encode()),
        ctypes.c_char_p(target.encode()),
        ctypes.c_char_p(fstype.encode()),
        0,
        None,
    )
    results[f"{fstype} {source}"] = err or "ok"
    if not err:  # whatever it mounted must hold no host file
        leaked += [c for c in canary_paths() if "STOCKADE-CANARY" in try_read(target + c)]
        syscall("umount2", ctypes.c_char_p(target.encode()), 2)  # MNT_DETACH
_, err = syscall("fsopen", ctypes.c_char_p(b"tmpfs"), 0)
results["fsopen"] = err or "ok"
_, err = syscall("open_tree", -100, ctypes.c_char_p(b"/"), 1)  # OPEN_TREE_CLONE
results["open_tree"] = err or "ok"
privileged(results, leaked)

# attack: mount filesystems (tmpfs, proc, sysfs, a cgroup v1 hierarchy, the host disk)
# users: user root
import ctypes

from _lib import syscall, verdict

results = {}
for source, fstype in (("tmpfs", "tmpfs"), ("proc", "proc"), ("sysfs", "sysfs"),
                       ("cgroup", "cgroup"), ("/dev/vda", "ext4")):
    _, err = syscall("mount", ctypes.c_char_p(source.encode()), ctypes.c_char_p(b"/mnt"),
                     ctypes.c_char_p(fstype.encode()), 0, None)
    results[fstype] = err or "ok"
_, err = syscall("fsopen", ctypes.c_char_p(b"tmpfs"), 0)
results["fsopen"] = err or "ok"
_, err = syscall("open_tree", -100, ctypes.c_char_p(b"/"), 1)  # OPEN_TREE_CLONE
results["open_tree"] = err or "ok"
verdict("succeeded" if "ok" in results.values() else "blocked", results)

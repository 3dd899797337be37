# attack: create and open block and memory devices (the host disk, /dev/mem)
# users: root
import os
import stat

from _lib import verdict

results = {}
for name, major, minor in (("vda", 254, 0), ("sda", 8, 0), ("loop0", 7, 0)):
    path = f"/root/{name}.blk"  # the overlay root has no nodev flag, unlike /tmp
    try:
        os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
        results[f"mknod {name}"] = "ok"
    except OSError as exc:
        results[f"mknod {name}"] = exc.strerror
    try:
        with open(path, "rb") as f:
            f.read(512)
        results[f"read {name}"] = "ok"
    except OSError as exc:
        results[f"read {name}"] = exc.strerror
for dev in ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/vda", "/dev/kmsg"):
    try:
        open(dev, "rb").close()
        results[dev] = "ok"
    except OSError as exc:
        results[dev] = exc.strerror
read_ok = [k for k, v in results.items() if v == "ok" and not k.startswith("mknod")]
# Creating a node is harmless if nothing can open it (devices cgroup / gVisor): contained.
outcome = "succeeded" if read_ok else ("contained" if "ok" in results.values() else "blocked")
verdict(outcome, results)

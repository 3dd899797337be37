# attack: create and open block and memory devices (the host disk, /dev/mem)
# users: root
# expect-microvm: contained
import os
import stat

from _lib import privileged, verdict

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
# A microVM's /dev/vda is its image's disk, shared read-only by every VM of that image: writing
# to it would tamper with all of them. Written back unchanged, so even success changes nothing.
try:
    with open("/dev/vda", "r+b", buffering=0) as f:
        f.seek(1 << 20)
        block = f.read(4096)
        f.seek(1 << 20)
        f.write(block)
        os.fsync(f.fileno())
    shared_write = "ok"
except OSError as exc:
    shared_write = exc.strerror
if shared_write == "ok":
    verdict("succeeded", {**results, "write to the shared image disk": "ok"})
results["write /dev/vda"] = shared_write
read_ok = [k for k, v in results.items() if v == "ok" and not k.startswith("mknod")]
if read_ok:  # devices read: the host's on a shared kernel, the guest's own in a microVM
    print(results)
    privileged({**{k: "ok" for k in read_ok}, "write /dev/vda": shared_write})
# Creating a node is harmless if nothing can open it (devices cgroup / gVisor): contained.
verdict("contained" if "ok" in results.values() else "blocked", results)

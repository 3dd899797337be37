# attack: read another sandbox's files through its host layer paths and /proc
# users: user root
# expect-microvm: blocked
import os

from _lib import ENV, judge_reads

other = ENV["STOCKADE_NEIGHBOUR_DIR"]
paths = []
for sub in ("disk/upper", "rootfs", "disk"):
    for name in ("home/user/secret.txt", "tmp/secret.txt"):
        paths.append(f"{other}/{sub}/{name}")
        paths.append(f"/proc/1/root{other}/{sub}/{name}")
        paths.append("/.stockade/run/../../.." + f"{other}/{sub}/{name}")
for pid in range(1, 400):
    paths.append(f"/proc/{pid}/root/home/user/secret.txt")
paths = [p for p in paths if not p.startswith("/proc/") or os.path.exists(p.split("/root")[0])]
judge_reads(paths)

# attack: reach host files through /proc/<pid>/root and /proc/<pid>/cwd of every visible process
# users: user root
# expect-microvm: blocked
import os

from _lib import canary_paths, judge_reads

paths = []
for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self", "thread-self"]:
    for link in ("root", "cwd"):
        for canary in canary_paths():
            paths.append(f"/proc/{pid}/{link}{canary}")
            paths.append(f"/proc/{pid}/{link}/../../../../..{canary}")
judge_reads(paths)

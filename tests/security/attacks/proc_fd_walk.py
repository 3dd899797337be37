# attack: walk /proc/*/fd and /proc/*/map_files links of every visible process towards host files
# users: user root
# expect-microvm: blocked
import os

from _lib import canary_paths, judge_reads

paths = []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for kind in ("fd", "map_files"):
        try:
            names = os.listdir(f"/proc/{pid}/{kind}")
        except OSError:
            continue
        for name in names:
            base = f"/proc/{pid}/{kind}/{name}"
            for canary in canary_paths():
                paths.append(f"{base}/../../../../../..{canary}")
            try:
                if os.path.isdir(base):
                    paths.extend(f"{base}/..{c}" for c in canary_paths())
            except OSError:
                pass
judge_reads(paths)

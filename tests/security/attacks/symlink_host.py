# attack: symlinks to the host paths of the canaries, read from inside
# users: user root
# expect-microvm: blocked
import os
import tempfile

from _lib import canary_paths, judge_reads

d = tempfile.mkdtemp(dir=os.path.expanduser("~"))
links = []
for i, canary in enumerate(canary_paths()):
    for j, target in enumerate([canary, "/proc/1/root" + canary, "../" * 30 + canary.lstrip("/")]):
        link = f"{d}/l{i}_{j}"
        os.symlink(target, link)
        links.append(link)
judge_reads(links)

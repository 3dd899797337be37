# attack: climb above / with .. from a directory fd held open across chdir (the cwd trick)
# users: user root
# expect-microvm: blocked
import os

from _lib import canary_paths, judge_reads

fd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
os.chdir("/")
os.fchdir(fd)
for _ in range(64):
    os.chdir("..")
paths = [os.getcwd() + c for c in canary_paths()]
paths += ["../" * 40 + c.lstrip("/") for c in canary_paths()]
paths += [f"/proc/self/fd/{fd}/" + "../" * 40 + c.lstrip("/") for c in canary_paths()]
judge_reads(paths)

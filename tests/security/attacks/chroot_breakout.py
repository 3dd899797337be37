# attack: the classic chroot breakout (chroot into a subdirectory, then climb with ..)
# users: root
# expect-microvm: contained
import os

from _lib import canary_paths, syscall, try_read, verdict

os.makedirs("/tmp/jail", exist_ok=True)
_, err = syscall("chroot", b"/tmp/jail")
if err:
    verdict("blocked", {"chroot": err})
for _ in range(64):
    os.chdir("..")
syscall("chroot", b".")
leaked = [c for c in canary_paths() if "STOCKADE-CANARY" in try_read(c)]
verdict("succeeded" if leaked else "contained", {"chroot": "ok", "leaked": leaked})

# attack: find and ptrace processes outside the sandbox (probe every pid up to 65536)
# users: user root
import os

from _lib import syscall, verdict

inside = {int(p) for p in os.listdir("/proc") if p.isdigit()}
outside = []
for pid in range(1, 65536):
    if pid in inside:
        continue
    try:
        os.kill(pid, 0)
        outside.append(pid)
    except ProcessLookupError:
        continue
    except PermissionError:
        outside.append(pid)
attached = [pid for pid in outside[:50] if not syscall("ptrace", 16, pid, 0, 0)[1]]
outcome = "succeeded" if attached else ("blocked")
verdict(outcome, {"visible_outside": outside[:10], "attached": attached})

# attack: find and ptrace processes outside the sandbox (probe every pid up to 65536)
# users: user root
# timeout: 20
# expect-microvm: user=blocked root=contained
import os

from _lib import privileged, syscall

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
for pid in attached:  # let them go (freezing the agent is freeze_agent's job)
    try:
        os.waitpid(pid, 0x40000000)  # __WALL
    except ChildProcessError:
        pass
    syscall("ptrace", 17, pid, 0, 0)  # PTRACE_DETACH
print({"visible_outside": outside[:10], "attached": attached})
# On a kernel of the sandbox's own every process it can see is the sandbox's own.
privileged({str(pid): "ok" for pid in attached} or {"attach": "none outside"})

# attack: freeze the agent (ptrace-attach pid 1 and exit: its SIGSTOP then stops it for good)
# users: root
# may-break
# timeout: 10
# expect-microvm: recovered
from _lib import privileged, syscall

PTRACE_ATTACH = 16
# Exit at once: the attach's SIGSTOP lands after the automatic detach and stops the whole agent
# (group-stop), which stays stopped (waiting for it first would let it run on after we exit).
results = {"attach": syscall("ptrace", PTRACE_ATTACH, 1, 0, 0)[1] or "ok"}
# If the agent froze, this verdict never reaches the host: the runner then expects a clear
# sandbox_unavailable, not a hang, from the platform.
privileged(results)

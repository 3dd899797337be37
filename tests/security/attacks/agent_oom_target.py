# attack: make the agent the OOM killer's first choice, then exhaust memory to kill it
# users: root
# sandbox: fresh
# may-break
# expect-microvm: contained
import os

from _lib import verdict

results = {}
try:
    with open("/proc/1/oom_score_adj", "w") as f:
        f.write("1000")
    results["agent oom_score_adj"] = "1000"
except OSError as exc:
    results["agent oom_score_adj"] = exc.strerror
pid = os.fork()
if pid == 0:
    hog = []
    while True:
        hog.append(bytearray(16 << 20))  # touches the pages: 16 MiB at a time
_, status = os.waitpid(pid, 0)
results["memory hog"] = (
    f"killed by signal {os.WTERMSIG(status)}"
    if os.WIFSIGNALED(status)
    else f"exited {os.WEXITSTATUS(status)}"
)
# Still here: the OOM killer chose the hog, not the agent. If it chose the agent, the runner
# sees the sandbox go unavailable and checks the platform's clean-up.
verdict("contained", results)

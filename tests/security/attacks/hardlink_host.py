# attack: hard links to host files (canaries, the agent's source) from the sandbox's writable disk
# users: user root
# expect-microvm: blocked
import os

from _lib import canary_paths, verdict

home = os.path.expanduser("~")
targets = canary_paths() + ["/.stockade/agent/main.py", "/.stockade/run/agent.sock"]
results = {}
for i, target in enumerate(targets):
    try:
        os.link(target, f"{home}/hl{i}")
        results[target] = "ok"
    except OSError as exc:
        results[target] = os.strerror(exc.errno or 0)
# A link into the read-only agent bind mount would give a writable name for a host file.
made = [t for t, r in results.items() if r == "ok"]
verdict("succeeded" if made else "blocked", results)

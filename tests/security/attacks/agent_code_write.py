# attack: modify the agent's code (a read-only bind mount of the host's source tree)
# users: root
# expect-microvm: blocked
import os

from _lib import privileged, syscall

results = {}
for path in ("/.stockade/agent/main.py", "/.stockade/agent/pwned.py"):
    try:
        with open(path, "a") as f:
            f.write("# pwned\n")
        results[path] = "ok"
    except OSError as exc:
        results[path] = exc.strerror
try:
    os.chmod("/.stockade/agent/main.py", 0o777)
    results["chmod"] = "ok"
except OSError as exc:
    results["chmod"] = exc.strerror
MS_REMOUNT, MS_BIND = 32, 4096
results["remount rw"] = (
    syscall("mount", None, b"/.stockade/agent", None, MS_REMOUNT | MS_BIND, None)[1] or "ok"
)
privileged(results)

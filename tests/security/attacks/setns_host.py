# attack: join the namespaces of every visible process (setns) to reach the host's
# users: user root
# expect-microvm: user=blocked root=contained
import os

from _lib import privileged, syscall

results = {}
for pid in [p for p in os.listdir("/proc") if p.isdigit()][:20]:
    for ns in ("mnt", "net", "pid", "user", "cgroup", "uts", "ipc"):
        try:
            fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
        except OSError as exc:
            results[f"{pid}/{ns}"] = f"open:{exc.errno}"
            continue
        _, err = syscall("setns", fd, 0)
        os.close(fd)
        results[f"{pid}/{ns}"] = err or "ok"
joined = [k for k, v in results.items() if v == "ok"]
print({"tried": len(results), "joined": joined[:20]})
privileged(
    {
        "setns into a namespace": "ok" if joined else "none joined",
        "sample": str(dict(list(results.items())[:4])),
    }
)

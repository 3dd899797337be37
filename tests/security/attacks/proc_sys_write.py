# attack: change host kernel settings through /proc/sys and /proc/sysrq-trigger
# users: user root
# timeout: 20
# expect-microvm: user=blocked root=contained
from _lib import privileged, verdict

results = {}
for path, value in (
    ("/proc/sys/kernel/hostname", "pwned"),
    ("/proc/sys/vm/drop_caches", "3"),
    ("/proc/sys/kernel/panic", "1"),
    ("/proc/sys/net/ipv4/ip_forward", "1"),
    ("/proc/sys/kernel/randomize_va_space", "0"),
    ("/proc/sysrq-trigger", "h"),
):
    try:
        with open(path, "w") as f:
            f.write(value)
        results[path] = "ok"
    except OSError as exc:
        results[path] = exc.strerror
# ip_forward lives in the sandbox's own network namespace: writing it is contained.
host_wide = [p for p, r in results.items() if r == "ok" and "net/" not in p]
if host_wide:  # kernel-wide settings: contained only on a kernel of the sandbox's own
    print(results)
    privileged({p: "ok" for p in host_wide})
verdict("contained" if "ok" in results.values() else "blocked", results)

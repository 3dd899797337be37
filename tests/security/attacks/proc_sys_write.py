# attack: change host kernel settings through /proc/sys and /proc/sysrq-trigger
# users: user root
from _lib import verdict

results = {}
for path, value in (("/proc/sys/kernel/hostname", "pwned"), ("/proc/sys/vm/drop_caches", "3"),
                    ("/proc/sys/kernel/panic", "1"), ("/proc/sys/net/ipv4/ip_forward", "1"),
                    ("/proc/sys/kernel/randomize_va_space", "0"), ("/proc/sysrq-trigger", "h")):
    try:
        with open(path, "w") as f:
            f.write(value)
        results[path] = "ok"
    except OSError as exc:
        results[path] = exc.strerror
# ip_forward lives in the sandbox's own network namespace: writing it is contained.
host_wide = [p for p, r in results.items() if r == "ok" and "net/" not in p]
outcome = "succeeded" if host_wide else ("contained" if "ok" in results.values() else "blocked")
verdict(outcome, results)

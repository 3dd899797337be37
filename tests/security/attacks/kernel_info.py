# attack: read the host kernel's log and symbol addresses (syslog, /dev/kmsg, /proc/kallsyms)
# users: user root
from _lib import syscall, verdict
import ctypes

buf = ctypes.create_string_buffer(4096)
results = {"syslog(READ_ALL)": syscall("syslog", 3, buf, 4096)[1] or "ok"}
try:
    open("/dev/kmsg", "rb").read(64)
    results["/dev/kmsg"] = "ok"
except OSError as exc:
    results["/dev/kmsg"] = exc.strerror
try:
    with open("/proc/kallsyms") as f:
        lines = [f.readline() for _ in range(200)]
    addresses = {line.split()[0] for line in lines if line.strip()}
    results["kallsyms"] = "addresses" if addresses - {"0000000000000000"} else "zeroed"
except OSError as exc:
    results["kallsyms"] = exc.strerror
leaks = [k for k, v in results.items() if v in ("ok", "addresses")]
verdict("succeeded" if leaks else "blocked", results)

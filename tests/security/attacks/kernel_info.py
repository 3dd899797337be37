# attack: read the host kernel's log and symbol addresses (syslog, /dev/kmsg, /proc/kallsyms)
# users: user root
# expect-microvm: user=blocked root=contained
from _lib import privileged, syscall
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
# On a kernel of the sandbox's own (a microVM's guest) these are that kernel's, not the host's.
privileged({k: "ok" if v in ("ok", "addresses") else v for k, v in results.items()})

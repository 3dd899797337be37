# attack: point the host's core_pattern at a program (run as host root on the next crash)
# users: user root
# expect-microvm: user=blocked root=contained
from _lib import privileged

results = {}
for path in (
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/kernel/hotplug",
    "/proc/sys/fs/binfmt_misc/register",
    "/sys/kernel/uevent_helper",
):
    try:
        with open(path, "w") as f:
            f.write("|/tmp/payload %p")
        results[path] = "ok"
    except OSError as exc:
        results[path] = exc.strerror
privileged(results)

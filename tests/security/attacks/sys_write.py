# attack: write to /sys (kernel, block devices, power, module parameters)
# users: user root
# timeout: 10
# expect-microvm: user=blocked root=recovered
from _lib import privileged

results = {}
for path, value in (
    ("/sys/kernel/mm/transparent_hugepage/enabled", "never"),
    ("/sys/block/vda/queue/scheduler", "none"),
    ("/sys/power/state", "freeze"),
    ("/sys/module/printk/parameters/time", "N"),
    ("/sys/kernel/profiling", "1"),
):
    try:
        with open(path, "w") as f:
            f.write(value)
        results[path] = "ok"
    except OSError as exc:
        results[path] = exc.strerror
privileged(results)

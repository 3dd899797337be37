# attack: perf_event_open on the CPU (kernel and hardware state)
# users: user root
# expect-microvm: user=blocked root=contained
import ctypes

from _lib import privileged, syscall

attr = (ctypes.c_uint32 * 32)(1, 128)  # PERF_TYPE_SOFTWARE, size 128, config 0 (cpu-clock)
results = {
    "this process": syscall("perf_event_open", attr, 0, -1, -1, 0)[1] or "ok",
    "whole cpu 0": syscall("perf_event_open", attr, -1, 0, -1, 0)[1] or "ok",
}
privileged(results)

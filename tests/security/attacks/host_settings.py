# attack: change host-wide state: clock, hostname, reboot, I/O ports
# users: root
# expect-microvm: contained
import ctypes

from _lib import privileged, syscall

tv = (ctypes.c_long * 2)(0, 0)
results = {
    "settimeofday": syscall("settimeofday", tv, None)[1] or "ok",
    "sethostname": syscall("sethostname", b"pwned", 5)[1] or "ok",
    "reboot(CAD_OFF)": syscall("reboot", 0xFEE1DEAD, 672274793, 0, None)[1] or "ok",
    "iopl(3)": syscall("iopl", 3)[1] or "ok",
}
privileged(results)

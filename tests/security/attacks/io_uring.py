# attack: set up an io_uring (its queued operations bypass seccomp)
# users: user root
# expect-microvm: contained
import ctypes

from _lib import privileged, syscall

params = (ctypes.c_uint8 * 120)()
fd, err = syscall("io_uring_setup", 8, params)
privileged({"io_uring_setup": err or "ok"})

# attack: set up an io_uring (its queued operations bypass seccomp)
# users: user root
import ctypes

from _lib import syscall, verdict

params = (ctypes.c_uint8 * 120)()
fd, err = syscall("io_uring_setup", 8, params)
verdict("blocked" if err else "succeeded", {"io_uring_setup": err or f"fd {fd}"})

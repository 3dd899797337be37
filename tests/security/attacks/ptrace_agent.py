# attack: ptrace the agent (pid 1) and read its memory with process_vm_readv
# users: user root
# expect-microvm: user=blocked root=contained
import ctypes
import os

from _lib import privileged, syscall

PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
PTRACE_DETACH = 17
results = {"attach": syscall("ptrace", PTRACE_ATTACH, 1, 0, 0)[1] or "ok"}
if results["attach"] == "ok":  # let it go again (freeze_agent keeps it stopped)
    os.waitpid(1, 0x40000000)  # __WALL
    syscall("ptrace", PTRACE_DETACH, 1, 0, 0)
results["seize"] = syscall("ptrace", PTRACE_SEIZE, 1, 0, 0)[1] or "ok"
if results["seize"] == "ok":
    syscall("ptrace", PTRACE_DETACH, 1, 0, 0)
buf = ctypes.create_string_buffer(64)
local = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 64)
remote = (ctypes.c_void_p * 2)(0x400000, 64)
results["process_vm_readv"] = syscall("process_vm_readv", 1, local, 1, remote, 1, 0)[1] or "ok"
fd, err = syscall("pidfd_open", 1, 0)
results["pidfd_getfd"] = err or (syscall("pidfd_getfd", fd, 3, 0)[1] or "ok")
try:
    open("/proc/1/mem", "rb").read(1)
    results["/proc/1/mem"] = "ok"
except OSError as exc:
    results["/proc/1/mem"] = exc.strerror
privileged(results)

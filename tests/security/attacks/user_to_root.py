# attack: `user` regains root with setuid/setresuid/capset, or signals root's processes
# users: user
# expect-microvm: blocked
import ctypes
import os

from _lib import syscall, verdict

results = {"setuid(0)": syscall("setresuid", 0, 0, 0)[1] or "ok"}
header = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0, 0, 0)
results["capset(all)"] = syscall("capset", header, data)[1] or "ok"
try:
    os.kill(1, 0)
    results["signal the agent"] = "ok"
except OSError as exc:
    results["signal the agent"] = exc.strerror
results["euid now"] = str(os.geteuid())
gained = results["setuid(0)"] == "ok" or results["capset(all)"] == "ok" or results["euid now"] == "0"
verdict("succeeded" if gained or results["signal the agent"] == "ok" else "blocked", results)

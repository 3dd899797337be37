# attack: load and unload kernel modules (init_module, finit_module, delete_module)
# users: user root
# expect-microvm: user=blocked root=contained
import ctypes
import os

from _lib import privileged, syscall

image = ctypes.create_string_buffer(b"\x7fELF" + b"\0" * 60)
results = {"init_module": syscall("init_module", image, 64, b"")[1] or "ok"}
fd = os.open("/bin/true", os.O_RDONLY)
results["finit_module"] = syscall("finit_module", fd, b"", 0)[1] or "ok"
results["delete_module"] = syscall("delete_module", b"loop", 0)[1] or "ok"
results["kexec_load"] = syscall("kexec_load", 0, 0, 0, 0)[1] or "ok"
privileged(results)

# attack: create eBPF maps and programs with bpf(2)
# users: user root
# expect-microvm: user=blocked root=contained
import ctypes

from _lib import privileged, syscall

attr = (ctypes.c_uint32 * 32)(1, 4, 4, 1)  # BPF_MAP_TYPE_HASH, key 4, value 4, 1 entry
results = {"BPF_MAP_CREATE": syscall("bpf", 0, attr, 128)[1] or "ok"}
insns = (ctypes.c_uint64 * 2)(0xB7, 0x95)  # r0 = 0; exit
license = ctypes.create_string_buffer(b"GPL")
prog = (ctypes.c_uint64 * 16)()
prog_u32 = ctypes.cast(prog, ctypes.POINTER(ctypes.c_uint32))
prog_u32[0], prog_u32[1] = 1, 2  # BPF_PROG_TYPE_SOCKET_FILTER, 2 instructions
prog[1] = ctypes.addressof(insns)
prog[2] = ctypes.addressof(license)
results["BPF_PROG_LOAD"] = syscall("bpf", 5, prog, 128)[1] or "ok"
privileged(results)

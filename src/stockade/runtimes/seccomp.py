"""Seccomp profile and capability set for sandboxed processes.

The profile is an OCI ``linux.seccomp`` object (runtime-spec config.json)
for runc and runsc.  It is an allowlist modelled on moby's default profile
(profiles/seccomp/default.json): anything not listed fails with EPERM.
The unconditional allowlist is data, kept in ``seccomp_allow.json`` beside
this module; the conditional rules (clone, clone3, personality, socket) are
built here.  See docs/seccomp.md for the reasoning behind every choice.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "ARCHITECTURES",
    "CLONE_NAMESPACE_FLAGS",
    "DEFAULT_CAPABILITIES",
    "DENIED_SYSCALLS",
    "EPERM",
    "ENOSYS",
    "PERSONALITY_VALUES",
    "RUNTIMES",
    "allowed_syscalls",
    "capabilities_spec",
    "default_profile",
]

ALLOWLIST_PATH = Path(__file__).with_name("seccomp_allow.json")

EPERM = 1
ENOSYS = 38

# Not SCMP_ARCH_X32: libseccomp's x86_64 filter then refuses every x32 system call outright
# (the x32 bit is checked first), and generating the x32 half of the filter cost runc about
# 35 ms per sandbox, a third of a cold create (docs/performance.md).
ARCHITECTURES: tuple[str, ...] = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86")

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
# | CLONE_NEWPID | CLONE_NEWNET: 0x7E020000, the mask moby uses.
CLONE_NAMESPACE_FLAGS = 0x7E020000

# personality(2) personas moby allows: PER_LINUX, PER_LINUX32, UNAME26,
# UNAME26|PER_LINUX32, and 0xffffffff (query the current persona).
PERSONALITY_VALUES: tuple[int, ...] = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

AF_VSOCK = 40

DENIED_SYSCALLS: dict[str, str] = {
    # Removed from moby's unconditional list.
    "io_uring_setup": "io_uring: large, often-exploited kernel surface whose queued ops bypass seccomp",
    "io_uring_enter": "io_uring: large, often-exploited kernel surface whose queued ops bypass seccomp",
    "io_uring_register": "io_uring: large, often-exploited kernel surface whose queued ops bypass seccomp",
    "userfaultfd": "lets user code stall kernel page faults, a standard race-exploit primitive",
    "keyctl": "kernel keyrings are not namespaced; shared with the host and other sandboxes",
    "add_key": "kernel keyrings are not namespaced; shared with the host and other sandboxes",
    "request_key": "kernel keyrings are not namespaced; can also upcall into host helpers",
    "bpf": "loads eBPF programs into the kernel (verifier bugs); moby needs CAP_SYS_ADMIN/CAP_BPF",
    "perf_event_open": "exposes kernel and hardware state, long CVE history; moby needs CAP_PERFMON",
    "ptrace": "inspects and controls other processes, including the root agent",
    "process_vm_readv": "reads another process's memory: the same power as ptrace",
    "process_vm_writev": "writes another process's memory: the same power as ptrace",
    "name_to_handle_at": "file handles leak inode identity and pair with open_by_handle_at",
    # Allowed by moby only with a capability the sandbox does not have.
    "kcmp": "compares kernel objects of other processes; moby needs CAP_SYS_PTRACE",
    "pidfd_getfd": "steals file descriptors from other processes; moby needs CAP_SYS_PTRACE",
    "process_madvise": "acts on another process's memory; moby needs CAP_SYS_PTRACE",
    "mount": "mounting filesystems; moby needs CAP_SYS_ADMIN",
    "umount": "unmounting filesystems (x86 only); moby needs CAP_SYS_ADMIN",
    "umount2": "unmounting filesystems; moby needs CAP_SYS_ADMIN",
    "fsopen": "new mount API; moby needs CAP_SYS_ADMIN",
    "fsconfig": "new mount API; moby needs CAP_SYS_ADMIN",
    "fsmount": "new mount API; moby needs CAP_SYS_ADMIN",
    "fspick": "new mount API; moby needs CAP_SYS_ADMIN",
    "move_mount": "new mount API; moby needs CAP_SYS_ADMIN",
    "open_tree": "new mount API; moby needs CAP_SYS_ADMIN",
    "mount_setattr": "new mount API; moby needs CAP_SYS_ADMIN",
    "pivot_root": "changes the root mount; never needed inside the sandbox",
    "chroot": "changes the root directory; moby needs CAP_SYS_CHROOT",
    "unshare": "creates namespaces (user namespaces expose more kernel); moby needs CAP_SYS_ADMIN",
    "setns": "joins other namespaces; moby needs CAP_SYS_ADMIN",
    "init_module": "loads kernel modules; moby needs CAP_SYS_MODULE",
    "finit_module": "loads kernel modules; moby needs CAP_SYS_MODULE",
    "delete_module": "unloads kernel modules; moby needs CAP_SYS_MODULE",
    "kexec_load": "loads a new kernel; never allowed by moby",
    "kexec_file_load": "loads a new kernel; never allowed by moby",
    "reboot": "reboots the host or a pid namespace; moby needs CAP_SYS_BOOT",
    "swapon": "host swap configuration; never allowed by moby",
    "swapoff": "host swap configuration; never allowed by moby",
    "open_by_handle_at": "opens files by handle, escaping the root (shocker); moby needs CAP_DAC_READ_SEARCH",
    "lookup_dcookie": "kernel profiling interface; moby needs CAP_SYS_ADMIN",
    "quotactl": "disk quota control; moby needs CAP_SYS_ADMIN",
    "quotactl_fd": "disk quota control; moby needs CAP_SYS_ADMIN",
    "syslog": "reads the host kernel log (addresses, other tenants); moby needs CAP_SYSLOG",
    "acct": "process accounting on the host; moby needs CAP_SYS_PACCT",
    "settimeofday": "sets the host clock; moby needs CAP_SYS_TIME",
    "clock_settime": "sets the host clock; moby needs CAP_SYS_TIME",
    "clock_settime64": "sets the host clock (x86 only); moby needs CAP_SYS_TIME",
    "stime": "sets the host clock (x86 only); moby needs CAP_SYS_TIME",
    "sethostname": "UTS changes are the runtime's job; moby needs CAP_SYS_ADMIN",
    "setdomainname": "UTS changes are the runtime's job; moby needs CAP_SYS_ADMIN",
    "iopl": "raw I/O port access; moby needs CAP_SYS_RAWIO",
    "ioperm": "raw I/O port access; moby needs CAP_SYS_RAWIO",
    "vhangup": "hangs up the controlling terminal; moby needs CAP_SYS_TTY_CONFIG",
    "fanotify_init": "filesystem-wide monitoring; moby needs CAP_SYS_ADMIN",
    "get_mempolicy": "NUMA policy; moby needs CAP_SYS_NICE",
    "set_mempolicy": "NUMA policy; moby needs CAP_SYS_NICE",
    "set_mempolicy_home_node": "NUMA policy; moby needs CAP_SYS_NICE",
    "mbind": "NUMA policy; moby needs CAP_SYS_NICE",
    "move_pages": "moves pages of other processes between NUMA nodes; never allowed by moby",
    "migrate_pages": "moves pages of other processes between NUMA nodes; never allowed by moby",
    # Obsolete interfaces moby never allows.
    "_sysctl": "obsolete sysctl interface",
    "uselib": "obsolete a.out loader with a history of bugs",
    "nfsservctl": "obsolete NFS daemon control",
    "ustat": "obsolete filesystem statistics",
    "sysfs": "obsolete filesystem-type lookup",
    "create_module": "obsolete module interface",
    "get_kernel_syms": "obsolete module interface",
    "query_module": "obsolete module interface",
    "vm86": "x86 virtual-8086 mode (x86 only), a history of bugs",
    "vm86old": "x86 virtual-8086 mode (x86 only), a history of bugs",
}
"""Syscalls that fail with EPERM, each with why (see docs/seccomp.md)."""

DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_NET_BIND_SERVICE",
)
"""Capabilities kept for root inside the sandbox (reasons in docs/seccomp.md)."""


@cache
def _allow_groups() -> dict[str, tuple[str, ...]]:
    data = json.loads(ALLOWLIST_PATH.read_text(encoding="utf-8"))
    return {group: tuple(names) for group, names in data["groups"].items()}


def allowed_syscalls() -> dict[str, tuple[str, ...]]:
    """Return the unconditional allowlist, grouped as in seccomp_allow.json."""
    return dict(_allow_groups())


def _arg(index: int, value: int, op: str, value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def _rule(name: str, action: str, *args: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": [name], "action": action}
    if args:
        rule["args"] = list(args)
    return rule


RUNTIMES: tuple[str, ...] = ("runc", "runsc")


@cache
def _profile(runtime: str) -> dict[str, Any]:
    names = sorted(name for group in _allow_groups().values() for name in group)
    rules: list[dict[str, Any]] = [{"names": names, "action": "SCMP_ACT_ALLOW"}]
    # Any socket family but AF_VSOCK (host/hypervisor sockets), as in moby.
    rules.append(_rule("socket", "SCMP_ACT_ALLOW", _arg(0, AF_VSOCK, "SCMP_CMP_NE")))
    # One rule per value: args within a rule are ANDed, rules are ORed.
    for value in PERSONALITY_VALUES:
        rules.append(_rule("personality", "SCMP_ACT_ALLOW", _arg(0, value, "SCMP_CMP_EQ")))
    # clone only when (flags & CLONE_NEW*) == 0; OCI puts the mask in value.
    no_new_namespace = _arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)
    rules.append(_rule("clone", "SCMP_ACT_ALLOW", no_new_namespace))
    if runtime == "runc":
        # clone3 passes its flags in memory, which seccomp cannot inspect, so
        # it fails with ENOSYS: glibc then falls back to clone, filtered above.
        rules.append({**_rule("clone3", "SCMP_ACT_ERRNO"), "errnoRet": ENOSYS})
    else:
        # runsc 2022-12-19 ignores errnoRet (clone3 would get EPERM and glibc
        # would not fall back, so no thread could start), and its Sentry has
        # no clone3: letting the call through yields the same ENOSYS.
        rules.append(_rule("clone3", "SCMP_ACT_ALLOW"))
        # Its Sentry knows syscall 270 as "pselect", not "pselect6", and skips names it does
        # not know: glibc's select() (pselect6 since 2.34) then failed with EPERM.
        rules.append(_rule("pselect", "SCMP_ACT_ALLOW"))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": list(ARCHITECTURES),
        "syscalls": rules,
    }


def default_profile(runtime: str = "runc") -> dict[str, Any]:
    """Return the OCI ``linux.seccomp`` object; a fresh copy on each call.

    ``runtime`` is ``"runc"`` or ``"runsc"``; they differ only in the clone3
    rule (see docs/seccomp.md).  Raises ValueError for any other runtime.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    return copy.deepcopy(_profile(runtime))


def capabilities_spec() -> dict[str, list[str]]:
    """Return the OCI ``process.capabilities`` object for sandboxed processes."""
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "bounding": list(caps),
        "effective": list(caps),
        "permitted": list(caps),
        "inheritable": [],
        "ambient": [],
    }

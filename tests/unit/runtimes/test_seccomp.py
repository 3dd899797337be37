"""The seccomp profile and capability set: structure, policy, and names known to libseccomp.

No root needed. Whether a real container is denied a syscall is tested elsewhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from stockade.runtimes.seccomp import (
    ARCHITECTURES,
    CLONE_NAMESPACE_FLAGS,
    DEFAULT_CAPABILITIES,
    DENIED_SYSCALLS,
    PERSONALITY_VALUES,
    RUNTIMES,
    allowed_syscalls,
    capabilities_spec,
    default_profile,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "seccomp.md"
CONDITIONAL = {"clone", "clone3", "personality", "socket"}
OCI_ACTIONS = {
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
}
OCI_OPS = {
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
}
# libseccomp architecture names for ARCHITECTURES, as scmp_sys_resolver -a takes them.
RESOLVER_ARCHES = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32"}
CLONE_NEW = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


def allowed_names(profile: dict[str, Any]) -> list[str]:
    return [n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]]


def rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [rule for rule in profile["syscalls"] if name in rule["names"]]


def unconditional() -> list[str]:
    return [name for names in allowed_syscalls().values() for name in names]


@pytest.fixture(params=RUNTIMES)
def profile(request: pytest.FixtureRequest) -> dict[str, Any]:
    return default_profile(request.param)


def test_profile_is_plain_json(profile: dict[str, Any]) -> None:
    assert json.loads(json.dumps(profile)) == profile


def test_each_call_returns_a_fresh_copy() -> None:
    first = default_profile()
    first["syscalls"][0]["names"].append("mount")
    first["defaultAction"] = "SCMP_ACT_ALLOW"
    assert default_profile() != first
    assert "mount" not in allowed_names(default_profile())


def test_default_runtime_is_runc() -> None:
    assert default_profile() == default_profile("runc")


def test_unknown_runtime_is_rejected() -> None:
    with pytest.raises(ValueError, match="kata"):
        default_profile("kata")


def test_default_action_denies_with_eperm(profile: dict[str, Any]) -> None:
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    # x32 is left out on purpose: unlisted, its system calls are all refused.
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]


def test_rules_follow_the_runtime_spec(profile: dict[str, Any]) -> None:
    assert set(profile) == {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    for rule in profile["syscalls"]:
        assert set(rule) <= {"names", "action", "args", "errnoRet"}, rule
        assert rule["names"] and all(isinstance(n, str) for n in rule["names"]), rule
        assert rule["action"] in OCI_ACTIONS, rule
        if "errnoRet" in rule:
            assert rule["action"] == "SCMP_ACT_ERRNO", rule
        for arg in rule.get("args", []):
            assert set(arg) == {"index", "value", "valueTwo", "op"}, rule
            assert 0 <= arg["index"] <= 5 and arg["op"] in OCI_OPS, rule
            assert 0 <= arg["value"] < 2**64 and 0 <= arg["valueTwo"] < 2**64, rule


def test_no_denied_syscall_is_allowed(profile: dict[str, Any]) -> None:
    leaked = sorted(set(allowed_names(profile)) & set(DENIED_SYSCALLS))
    assert not leaked, f"denied syscalls in an allow rule: {leaked}"


def test_explicit_removals_are_denied() -> None:
    removed = {
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "userfaultfd",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "perf_event_open",
        "ptrace",
        "mount",
        "umount2",
        "unshare",
        "setns",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "swapon",
        "swapoff",
        "pivot_root",
        "open_by_handle_at",
        "name_to_handle_at",
        "lookup_dcookie",
        "quotactl",
        "syslog",
        "acct",
        "settimeofday",
        "clock_settime",
        "stime",
    }
    assert removed <= set(DENIED_SYSCALLS), sorted(removed - set(DENIED_SYSCALLS))
    assert all(reason.strip() and "\n" not in reason for reason in DENIED_SYSCALLS.values())


def test_allowed_names_are_unique(profile: dict[str, Any]) -> None:
    names = unconditional()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"listed twice in seccomp_allow.json: {duplicates}"
    first = profile["syscalls"][0]
    assert first["action"] == "SCMP_ACT_ALLOW" and "args" not in first
    assert first["names"] == sorted(names)
    # The conditional syscalls have their own rules only; nothing else appears twice.
    assert not CONDITIONAL & set(names)
    for rule in profile["syscalls"][1:]:
        # runsc's extra rule is pselect6 under gVisor's own name for it.
        assert len(rule["names"]) == 1 and rule["names"][0] in CONDITIONAL | {"pselect"}, rule


def test_essentials_are_allowed(profile: dict[str, Any]) -> None:
    # What glibc, Python and apt-get (dropping to _apt) cannot run without.
    needed = {
        "read",
        "write",
        "openat",
        "close",
        "mmap",
        "mprotect",
        "munmap",
        "brk",
        "execve",
        "exit_group",
        "futex",
        "rt_sigaction",
        "rt_sigreturn",
        "rt_sigprocmask",
        "wait4",
        "newfstatat",
        "statx",
        "getdents64",
        "pipe2",
        "dup3",
        "fcntl",
        "ioctl",
        "socket",
        "connect",
        "clone",
        "fork",
        "vfork",
        "set_robust_list",
        "rseq",
        "arch_prctl",
        "prlimit64",
        "getrandom",
        "setresuid",
        "setresgid",
        "setgroups",
        "fchownat",
        "fchmodat",
        "utimensat",
        "renameat2",
        "unlinkat",
        "mknodat",
        "seccomp",
        "prctl",
    }
    assert needed <= set(allowed_names(profile)), sorted(needed - set(allowed_names(profile)))


def test_clone_is_allowed_only_without_namespace_flags(profile: dict[str, Any]) -> None:
    assert CLONE_NAMESPACE_FLAGS == 0x7E020000 == sum(CLONE_NEW.values())
    (rule,) = rules_for(profile, "clone")
    assert rule["action"] == "SCMP_ACT_ALLOW"
    # OCI (like libseccomp) takes the mask in value and the expected result in valueTwo.
    assert rule["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    for name, flag in CLONE_NEW.items():
        assert rule["args"][0]["value"] & flag, name


def test_clone3_gets_enosys_on_runc() -> None:
    (rule,) = rules_for(default_profile("runc"), "clone3")
    assert rule == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def test_clone3_reaches_the_sentry_on_runsc() -> None:
    # runsc 2022-12-19 ignores errnoRet; its Sentry answers ENOSYS itself (docs/seccomp.md).
    (rule,) = rules_for(default_profile("runsc"), "clone3")
    assert rule == {"names": ["clone3"], "action": "SCMP_ACT_ALLOW"}


def test_runtimes_differ_only_in_clone3_and_gvisors_name_for_pselect6() -> None:
    def common(profile: dict[str, Any]) -> dict[str, Any]:
        return {
            **profile,
            "syscalls": [r for r in profile["syscalls"] if r["names"] not in (["clone3"], ["pselect"])],
        }

    assert common(default_profile("runc")) == common(default_profile("runsc"))
    (rule,) = rules_for(default_profile("runsc"), "pselect")
    assert rule == {"names": ["pselect"], "action": "SCMP_ACT_ALLOW"}
    assert not rules_for(default_profile("runc"), "pselect")


def test_personality_only_with_safe_values(profile: dict[str, Any]) -> None:
    rules = rules_for(profile, "personality")
    assert all(r["action"] == "SCMP_ACT_ALLOW" and len(r["args"]) == 1 for r in rules)
    assert all(r["args"][0]["index"] == 0 and r["args"][0]["op"] == "SCMP_CMP_EQ" for r in rules)
    assert sorted(r["args"][0]["value"] for r in rules) == [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]
    assert sorted(PERSONALITY_VALUES) == [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]


def test_socket_excludes_vsock(profile: dict[str, Any]) -> None:
    (rule,) = rules_for(profile, "socket")
    assert rule["args"] == [{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}]


@cache
def resolve(name: str, arch: str) -> int:
    tool = shutil.which("scmp_sys_resolver")
    if tool is None:
        pytest.fail("scmp_sys_resolver not found: install it with `apt-get install -y seccomp`")
    out = subprocess.run([tool, "-a", arch, name], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_every_name_is_a_real_syscall_for_libseccomp() -> None:
    """Each name must be a syscall on at least one declared arch (compat-only names included)."""
    names = set(unconditional()) | CONDITIONAL | set(DENIED_SYSCALLS)
    arches = [RESOLVER_ARCHES[a] for a in ARCHITECTURES]
    unknown = sorted(n for n in names if all(resolve(n, a) < 0 for a in arches))
    assert not unknown, f"not a syscall on {arches} per libseccomp: {unknown}"


def test_conditional_syscalls_exist_on_x86_64() -> None:
    for name in CONDITIONAL:
        assert resolve(name, "x86_64") >= 0, name


def test_capabilities_exclude_dangerous_ones() -> None:
    banned = {
        "CAP_SYS_ADMIN",
        "CAP_NET_RAW",
        "CAP_SYS_PTRACE",
        "CAP_MKNOD",
        "CAP_SYS_MODULE",
        "CAP_SYS_CHROOT",
        "CAP_SETPCAP",
        "CAP_SETFCAP",
        "CAP_DAC_READ_SEARCH",
        "CAP_SYS_RAWIO",
        "CAP_SYS_TIME",
        "CAP_SYS_BOOT",
        "CAP_NET_ADMIN",
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYSLOG",
        "CAP_AUDIT_WRITE",
        "CAP_LINUX_IMMUTABLE",
    }
    assert not banned & set(DEFAULT_CAPABILITIES)
    # apt-get as root: chown/chmod what it unpacks, and drop to the _apt user.
    assert {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID"} <= set(
        DEFAULT_CAPABILITIES
    )
    assert len(set(DEFAULT_CAPABILITIES)) == len(DEFAULT_CAPABILITIES)
    assert all(re.fullmatch(r"CAP_[A-Z_]+", c) for c in DEFAULT_CAPABILITIES)


def test_capabilities_spec_shape() -> None:
    spec = capabilities_spec()
    caps = list(DEFAULT_CAPABILITIES)
    assert spec == {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []}
    spec["bounding"].append("CAP_SYS_ADMIN")
    assert "CAP_SYS_ADMIN" not in capabilities_spec()["bounding"]
    assert spec["effective"] == caps  # the lists are not shared


def test_docs_cover_every_name() -> None:
    text = DOC.read_text(encoding="utf-8")
    words = set(re.findall(r"`([A-Za-z0-9_]+)`", text))
    missing = {
        "allowed": sorted(set(unconditional()) - words),
        "conditional": sorted(CONDITIONAL - words),
        "denied": sorted(set(DENIED_SYSCALLS) - words),
        "capabilities": sorted(set(DEFAULT_CAPABILITIES) - words),
    }
    assert not any(missing.values()), f"docs/seccomp.md does not mention: {missing}"
    count = len(unconditional())
    assert f"{count} unconditional" in text, f"docs/seccomp.md should state the count ({count})"

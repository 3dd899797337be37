"""Shared helpers of the attack corpus (uploaded next to every attack; stdlib only).

An attack imports this, tries one thing, and ends with ``verdict(...)``: one JSON line
``{"attack", "outcome", "detail"}`` where outcome is ``blocked`` (the attempt failed),
``contained`` (it worked, but only on the sandbox's own things) or ``succeeded`` (it crossed the
boundary). The host runner never trusts the verdict alone: it also looks for the host's secrets
in the output and checks the host's canaries after every attack.
"""

import ctypes
import errno
import json
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

#: x86-64 system call numbers used by the corpus.
NR = {
    "ptrace": 101,
    "syslog": 103,
    "setns": 308,
    "unshare": 272,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "process_vm_readv": 310,
    "kexec_load": 246,
    "reboot": 169,
    "sethostname": 170,
    "settimeofday": 164,
    "fsopen": 430,
    "open_tree": 428,
    "clone": 56,
    "capset": 126,
    "setresuid": 117,
    "pidfd_getfd": 438,
    "pidfd_open": 434,
    "iopl": 172,
}

ENV = os.environ


def attack_name() -> str:
    return os.path.splitext(os.path.basename(sys.argv[0]))[0]


def verdict(outcome: str, detail: object = "") -> None:
    """Print the one-line verdict and exit."""
    assert outcome in ("blocked", "contained", "succeeded"), outcome
    sys.stdout.flush()
    print(json.dumps({"attack": attack_name(), "outcome": outcome, "detail": detail}))
    sys.stdout.flush()
    os._exit(0)


def syscall(name: str, *args: object) -> tuple[int, str]:
    """Call a raw system call; return (result, errno name or '')."""
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    result = libc.syscall(NR[name], *conv)
    err = ctypes.get_errno() if result == -1 else 0
    return result, errno.errorcode.get(err, str(err)) if err else ""


def canary_paths() -> list[str]:
    """Host paths of the canary files the runner planted (the sandbox must never see them)."""
    return [p for p in ENV.get("STOCKADE_CANARIES", "").split(":") if p]


def try_read(path: str, limit: int = 4096) -> str:
    """Read ``path``; return its first bytes (so the runner can spot secrets) or 'ERR:<errno>'."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError as exc:
        return "ERR:" + errno.errorcode.get(exc.errno or 0, str(exc))


def read_attempts(paths: list[str]) -> tuple[dict[str, str], list[str]]:
    """Try to read every path: (path -> 'ok' or an errno, paths that showed a canary)."""
    results, leaked = {}, []
    for path in paths:
        got = try_read(path)
        results[path] = got[4:] if got.startswith("ERR:") else "ok"
        if results[path] == "ok":
            print(f"read {path}: {got[:200]!r}")
            if "STOCKADE-CANARY" in got:
                leaked.append(path)
    return results, leaked


def judge_reads(paths: list[str]) -> None:
    """Read every path; the verdict is ``succeeded`` if any showed a canary, else ``blocked``."""
    results, leaked = read_attempts(paths)
    if leaked:
        verdict("succeeded", {"leaked": leaked})
    readable = sorted(p for p, r in results.items() if r == "ok")
    verdict("blocked", {"tried": len(paths), "readable_without_canary": readable[:10]})


def own_kernel() -> bool:
    """Whether this sandbox runs on a kernel of its own (a microVM's guest, gVisor's Sentry),
    told by a boot id other than the host's: what root gains there stays inside."""
    host = ENV.get("STOCKADE_HOST_BOOT_ID", "")
    return bool(host) and not _BOOT_ID.startswith("ERR:") and _BOOT_ID != host


def privileged(results: dict, leaked: list | None = None) -> None:
    """Verdict of an attempt at privileged kernel operations (``results``: name -> 'ok' or an
    error): ``blocked`` if none worked; if some did, ``contained`` on a kernel of the sandbox's
    own that showed no host secret (``leaked`` empty), else ``succeeded``."""
    worked = [k for k, v in results.items() if v == "ok"]
    if not worked:
        verdict("blocked", results)
    if own_kernel() and not leaked:
        verdict("contained", {**results, "kernel": "the sandbox's own", "leaked": leaked or []})
    verdict("succeeded", {**results, "leaked": leaked or []})


#: Read at import, before an attack moves its root away (pivot_root, chroot).
_BOOT_ID = try_read("/proc/sys/kernel/random/boot_id").strip()

# attack: unshare a new user (and mount) namespace to regain capabilities
# users: user root
# expect-microvm: contained
from _lib import privileged, syscall

CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
results = {}
for name, flags in (
    ("user", CLONE_NEWUSER),
    ("user+mount", CLONE_NEWUSER | CLONE_NEWNS),
    ("mount", CLONE_NEWNS),
    ("net", CLONE_NEWNET),
):
    _, err = syscall("unshare", flags)
    results[name] = err or "ok"
# clone(CLONE_NEWUSER) must be filtered too (the seccomp rule inspects clone's flags).
_, err = syscall("clone", CLONE_NEWUSER | 17, 0, 0, 0, 0)  # 17 = SIGCHLD
if not err:
    import os

    if _ == 0:
        os._exit(0)
    os.waitpid(_, 0)
results["clone(NEWUSER)"] = err or "ok"
privileged(results)

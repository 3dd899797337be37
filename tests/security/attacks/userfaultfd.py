# attack: create a userfaultfd (stalls kernel page faults: a race-exploit primitive)
# users: user root
# expect-microvm: contained
from _lib import privileged, syscall

results = {
    "userfaultfd": syscall("userfaultfd", 0)[1] or "ok",
    "userfaultfd(user only)": syscall("userfaultfd", 1)[1] or "ok",
}
try:
    open("/dev/userfaultfd", "rb").close()
    results["/dev/userfaultfd"] = "ok"
except OSError as exc:
    results["/dev/userfaultfd"] = exc.strerror
privileged(results)

# attack: create a userfaultfd (stalls kernel page faults: a race-exploit primitive)
# users: user root
from _lib import syscall, verdict

results = {"userfaultfd": syscall("userfaultfd", 0)[1] or "ok",
           "userfaultfd(user only)": syscall("userfaultfd", 1)[1] or "ok"}
try:
    open("/dev/userfaultfd", "rb").close()
    results["/dev/userfaultfd"] = "ok"
except OSError as exc:
    results["/dev/userfaultfd"] = exc.strerror
verdict("succeeded" if "ok" in results.values() else "blocked", results)

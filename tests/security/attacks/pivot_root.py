# attack: pivot_root to move the sandbox's root away
# users: root
from _lib import syscall, verdict

_, err = syscall("pivot_root", b"/tmp", b"/tmp")
verdict("blocked" if err else "succeeded", {"pivot_root": err or "ok"})

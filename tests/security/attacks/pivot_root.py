# attack: pivot_root to move the sandbox's root away
# users: root
# may-break
# expect-microvm: contained
from _lib import privileged, syscall

_, err = syscall("pivot_root", b"/tmp", b"/tmp")
privileged({"pivot_root": err or "ok"})

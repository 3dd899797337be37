# attack: read /etc/shadow, hoping for the host's (the runner compares its hash with the host's)
# users: user root
# expect-microvm: user=blocked root=contained
import hashlib

from _lib import try_read, verdict

paths = [
    "/etc/shadow",
    "/proc/1/root/etc/shadow",
    "/proc/self/root/etc/shadow",
    "/.stockade/run/../../etc/shadow",
    "/../../../etc/shadow",
]
hashes = {}
for path in paths:
    try:
        with open(path, "rb") as f:
            hashes[path] = hashlib.sha256(f.read()).hexdigest()
    except OSError as exc:
        hashes[path] = f"ERR:{exc.errno}"
print("shadow hashes:", hashes)
readable = [p for p, h in hashes.items() if not h.startswith("ERR")]
# Reading the image's own shadow as root is fine: the runner flags the host's by its hash.
verdict("contained" if readable else "blocked", {"readable": readable})

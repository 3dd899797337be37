# attack: modify the image's files (shared read-only lower layer of every sandbox)
# users: root
# expect-microvm: contained
import os

from _lib import verdict

results = {}
for path in ("/etc/os-release", "/usr/bin/true", "/usr/lib/python3.11/os.py"):
    try:
        with open(path, "ab") as f:
            f.write(b"\n# STOCKADE-TAMPER\n")
        results[path] = "ok"
    except OSError as exc:
        results[path] = exc.strerror
# Writes land in this sandbox's copy-on-write layer; the runner checks the host's image files.
verdict("contained" if "ok" in results.values() else "blocked", results)

# attack: exhaust inodes (empty files) until the sandbox's disk refuses; the host must not notice
# users: user
# sandbox: fresh
# expect-microvm: contained
import os
import time

from _lib import verdict

d = os.path.expanduser("~/inodes")
os.makedirs(d, exist_ok=True)
made, result, deadline = 0, "time limit", time.monotonic() + 20
while time.monotonic() < deadline and made < 500_000:
    try:
        os.close(os.open(f"{d}/{made}", os.O_CREAT | os.O_WRONLY, 0o600))
        made += 1
    except OSError as exc:
        result = exc.strerror
        break
verdict("contained", {"files": made, "stopped_by": result})

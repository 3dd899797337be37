# attack: kill -9 1 (the agent) from inside
# users: user root
# expect-microvm: blocked
import os
import signal
import time

from _lib import verdict

try:
    os.kill(1, signal.SIGKILL)
    sent = "sent"
except OSError as exc:
    sent = exc.strerror
time.sleep(0.3)
# Reaching this line and reporting means the agent still serves us; the runner checks anyway.
verdict("blocked", {"kill -9 1": sent, "agent": "alive"})

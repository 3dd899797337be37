# attack: `user` talks to the agent's socket directly (it would run commands as root)
# users: user
# expect-microvm: blocked
import socket

from _lib import verdict

s = socket.socket(socket.AF_UNIX)
try:
    s.connect("/.stockade/run/agent.sock")
    verdict("succeeded", "connected to the root agent as user")
except OSError as exc:
    verdict("blocked", exc.strerror)

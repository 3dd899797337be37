# attack: replace the agent's socket with a symlink to a host socket (the engine's next connect)
# users: root
# sandbox: fresh
# expect-microvm: blocked
import os

from _lib import ENV, verdict

results = {}
try:
    os.unlink("/.stockade/run/agent.sock")
    results["unlink"] = "ok"
except OSError as exc:
    results["unlink"] = exc.strerror
try:
    os.symlink(ENV["STOCKADE_HOST_SOCKET"], "/.stockade/run/agent.sock")
    results["symlink"] = "ok"
except OSError as exc:
    results["symlink"] = exc.strerror
# Planting the link only harms this sandbox: the engine refuses to follow it (the runner
# reconnects and checks that nothing on the host was reached).
verdict("contained" if results["symlink"] == "ok" else "blocked", results)

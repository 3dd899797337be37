# attack: kill the agent (pid 1) with every catchable signal, as root inside
# users: root
# sandbox: fresh
# may-break
# expect-microvm: contained
import os
import signal
import time

from _lib import verdict

sent = {}
for sig in (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGPIPE,
    signal.SIGALRM,
    signal.SIGSEGV,
    signal.SIGABRT,
    signal.SIGSTOP,
):
    try:
        os.kill(1, sig)
        sent[sig.name] = "sent"
    except OSError as exc:
        sent[sig.name] = exc.strerror
    time.sleep(0.05)
os.kill(1, signal.SIGCONT)
time.sleep(0.5)
# Still here: the agent ignored or survived them. If it died, the runner sees the sandbox
# become unavailable and checks that the platform says so and cleans up.
verdict("contained", sent)

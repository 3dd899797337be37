# attack: TIOCSTI keystroke injection into the terminal of whoever started us
# users: user root
# expect-microvm: user=blocked root=contained
import fcntl
import os
import pty
import termios

from _lib import verdict

results = {}
for fd in (0, 1, 2):
    try:
        fcntl.ioctl(fd, termios.TIOCSTI, b"x")
        results[f"fd {fd}"] = "ok"
    except OSError as exc:
        results[f"fd {fd}"] = exc.strerror
try:
    tty = os.open("/dev/tty", os.O_RDWR)
    fcntl.ioctl(tty, termios.TIOCSTI, b"x")
    results["/dev/tty"] = "ok"
except OSError as exc:
    results["/dev/tty"] = exc.strerror
# Our own new pseudo-terminal: injecting there only reaches ourselves.
master, slave = pty.openpty()
try:
    fcntl.ioctl(slave, termios.TIOCSTI, b"x")
    results["own pty"] = "ok"
except OSError as exc:
    results["own pty"] = exc.strerror
outside = [k for k, v in results.items() if v == "ok" and k != "own pty"]
outcome = "succeeded" if outside else ("contained" if results["own pty"] == "ok" else "blocked")
verdict(outcome, results)

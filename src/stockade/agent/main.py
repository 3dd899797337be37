"""The agent's entry point: listen on the host's channel and serve every connection."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import sys
import time

from . import connection, files, limits, ports, processes, watch
from . import protocol as p
from .connection import AgentError, Stream

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: see "Start-up" in __init__.py
    from typing import Any

    from .connection import Handler

USAGE = "usage: stockade-agent (--listen SOCKET | --device PORT|auto)"
STARTED = time.time()


def hello(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """hello: who we are, so the host can check the protocol version."""
    return {
        "protocol": p.PROTOCOL_VERSION,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "python": sys.version.split()[0],
        "hostname": os.uname().nodename,
        "uptime": time.time() - STARTED,
    }


#: ioctl of /dev/urandom: reseed the kernel's CRNG from its input pool now (Linux >= 4.17).
RNDRESEEDCRNG = 0x5207
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MACHINE_ID = re.compile(r"[0-9a-f]{32}")


def seed(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """sys.seed: after a restore, mix host entropy into the kernel pool and reseed its CRNG;
    optionally set the clock (``time``, seconds since the epoch), the ``hostname`` and
    /etc/machine-id (``machine_id``), so that sandboxes restored from one snapshot share none."""
    try:
        entropy = bytes.fromhex(str(params.get("hex", "")))
    except ValueError:
        raise AgentError(p.ErrorCode.BAD_REQUEST, "hex must be hexadecimal") from None
    hostname, machine_id, when = params.get("hostname"), params.get("machine_id"), params.get("time")
    if hostname is not None and not (isinstance(hostname, str) and _HOSTNAME.fullmatch(hostname)):
        raise AgentError(p.ErrorCode.BAD_REQUEST, "hostname must be a DNS label")
    if machine_id is not None and not (isinstance(machine_id, str) and _MACHINE_ID.fullmatch(machine_id)):
        raise AgentError(p.ErrorCode.BAD_REQUEST, "machine_id must be 32 lowercase hex digits")
    if when is not None and (isinstance(when, bool) or not isinstance(when, (int, float))):
        raise AgentError(p.ErrorCode.BAD_REQUEST, "time must be a number of seconds")
    try:
        if when is not None:
            time.clock_settime(time.CLOCK_REALTIME, float(when))
        if hostname is not None:
            socket.sethostname(hostname)
        if machine_id is not None:
            tmp = "/etc/.machine-id.stockade"
            with open(tmp, "w") as f:
                f.write(machine_id + "\n")
            os.chmod(tmp, 0o444)
            os.replace(tmp, "/etc/machine-id")
    except OSError as exc:
        raise AgentError(p.ErrorCode.PERMISSION_DENIED, f"sys.seed: {exc}") from None
    with open("/dev/urandom", "wb") as f:
        f.write(entropy)
        f.flush()
        try:  # without it, the CRNG only picks the new entropy up at its next periodic reseed
            fcntl.ioctl(f.fileno(), RNDRESEEDCRNG)
            reseeded = True
        except OSError:  # not root, or not a Linux kernel (gVisor)
            reseeded = False
    return {"reseeded": reseeded}


def sync(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """sys.sync: write every dirty page to disk. A microVM's page cache dies with its QEMU, and
    gVisor's with its Sentry, so the host asks for this before it stops or saves a sandbox."""
    os.sync()
    return {}


#: The microVM guest's settings stage, left in the root by its init (images/guest.py).
SETTINGS = "/.stockade/settings.sh"
SETUP_SCRIPT = """die() { echo "$*" >&2; exit 1; }
mount -o remount,rw,nosuid,nodev /.stockade || die "cannot unseal /.stockade"
R=
. /.stockade/settings.sh
mount -o remount,ro,nosuid,nodev /.stockade || die "cannot seal /.stockade"
echo SETUP-OK
"""


def setup(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """sys.setup: in a microVM guest restored from a snapshot template, apply the host's
    settings share now (address and routes, resolver, CA bundle, volumes), as init does at boot.
    Success is read from the script's output: the reaper thread may collect its exit status."""
    import subprocess  # only here: the agent's start-up imports as little as it can

    if os.getuid() != 0 or not os.path.exists(SETTINGS):
        raise AgentError(p.ErrorCode.BAD_REQUEST, "sys.setup: this sandbox has no settings stage")
    proc = subprocess.Popen(
        ["/.stockade/bin/sh", "-c", SETUP_SCRIPT],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/.stockade/bin"},
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AgentError(p.ErrorCode.INTERNAL, "sys.setup: the settings stage hung") from None
    if b"SETUP-OK" not in out:
        raise AgentError(
            p.ErrorCode.INTERNAL, f"sys.setup failed: {err.decode(errors='replace').strip()[-500:]}"
        )
    return {}


def handlers() -> dict[str, Handler]:
    table: dict[str, Handler] = {
        p.Method.HELLO.value: hello,
        p.Method.SYS_SEED.value: seed,
        p.Method.SYS_SYNC.value: sync,
        p.Method.SYS_SETUP.value: setup,
        p.Method.SYS_LIMITS.value: limits.set_limits,
        p.Method.SYS_STATS.value: limits.stats,
    }
    table.update(processes.HANDLERS)
    table.update(files.HANDLERS)
    table.update(watch.HANDLERS)
    table.update(ports.HANDLERS)
    return table


def serve_unix(path: str) -> None:
    """Listen on a unix socket (container and gVisor tiers) until killed."""
    from .listener import Listener

    Listener(path, handlers()).serve_forever()


def parse_args(argv: list[str]) -> tuple[str, str]:
    """``--listen SOCKET`` (a unix socket path) or ``--device PORT`` (a virtio-serial port,
    ``auto``: find it). Parsed by hand: argparse would cost every sandbox start 10 ms."""
    if len(argv) != 2 or argv[0] not in ("--listen", "--device") or not argv[1]:
        raise SystemExit(USAGE)
    return argv[0], argv[1]


def main(argv: list[str] | None = None) -> None:
    option, where = parse_args(sys.argv[1:] if argv is None else argv)
    # As PID 1 the kernel only delivers signals we handle; Python handles SIGINT by raising
    # KeyboardInterrupt, which would let root inside stop the agent. A no-op handler is reset
    # to the default in every child at exec, so commands still get Ctrl-C normally.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    processes.start_reaper()
    connection.PIDS_RELIEF = processes.relieve_pids
    if option == "--device":
        from .serial import serve_device

        # A microVM guest: the host's cgroup holds QEMU, so the agent limits its commands itself.
        why = limits.enable()
        if why:
            print(
                f"stockade-agent: commands run without limits of their own: {why}",
                file=sys.stderr,
                flush=True,
            )
        serve_device(where, handlers())
    else:
        serve_unix(where)

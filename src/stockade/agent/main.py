"""The agent's entry point: listen on the host's channel and serve every connection."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from . import files, ports, processes
from . import protocol as p
from .connection import Handler, Stream

STARTED = time.time()


def hello(stream: Stream, params: dict[str, Any]) -> dict[str, Any]:
    """hello: who we are, so the host can check the protocol version."""
    return {"protocol": p.PROTOCOL_VERSION, "pid": os.getpid(), "uid": os.getuid(),
            "python": sys.version.split()[0], "hostname": os.uname().nodename,
            "uptime": time.time() - STARTED}


def seed(stream: Stream, params: dict[str, Any]) -> None:
    """sys.seed: mix host-provided entropy into the kernel's pool (after a restore)."""
    entropy = bytes.fromhex(str(params.get("hex", "")))
    with open("/dev/urandom", "wb") as f:
        f.write(entropy)


def handlers() -> dict[str, Handler]:
    table: dict[str, Handler] = {p.Method.HELLO.value: hello, p.Method.SYS_SEED.value: seed}
    table.update(processes.HANDLERS)
    table.update(files.HANDLERS)
    table.update(ports.HANDLERS)
    return table


def serve_unix(path: str) -> None:
    """Listen on a unix socket (container and gVisor tiers) until killed."""
    from .listener import Listener

    Listener(path, handlers()).serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stockade-agent")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", help="unix socket path to serve on")
    where.add_argument("--device", help="virtio-serial port to serve on ('auto': find it)")
    args = parser.parse_args(argv)
    # As PID 1 the kernel only delivers signals we handle; Python handles SIGINT by raising
    # KeyboardInterrupt, which would let root inside stop the agent. A no-op handler is reset
    # to the default in every child at exec, so commands still get Ctrl-C normally.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    processes.start_reaper()
    if args.device:
        from .serial import serve_device

        serve_device(args.device, handlers())
    else:
        serve_unix(args.listen)

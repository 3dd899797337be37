"""``stockade host``: join a Ray cluster as one host and run its host actor until stopped.

The command starts this machine's Ray node itself (``ray start --block`` as a child, with the
host's slots as custom resources and its own temp directory), connects to it, and starts the
host actor pinned to that node. The node dies with the command (the child gets SIGTERM when its
parent dies), so "the host is gone" always means "its Ray node and actor are gone".
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .resources import HOST_UNITS, HostCapacity, host_resource

log = logging.getLogger("stockade.cluster")
NAMESPACE = "stockade"
#: Object store size of a host's Ray node: the cluster passes small values only (streams go
#: directly between the API and the host), so the minimum Ray accepts is enough.
OBJECT_STORE_BYTES = 80 * 1000 * 1000
#: Ray declares a dead node dead after about 15 s of failed health checks.
NODE_WAIT = 90.0
PR_SET_PDEATHSIG = 1


def actor_name(host: str) -> str:
    """The Ray name of host ``host``'s actor (namespace :data:`NAMESPACE`)."""
    return f"host-{host}"


def default_name(data_dir: Path) -> str:
    """This machine's name and a digest of the data directory: stable across restarts,
    distinct for two hosts sharing one machine."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:6]
    return f"{socket.gethostname()}-{digest}"


@dataclass(frozen=True)
class HostOptions:
    cluster: str  # the Ray head's GCS address, host:port
    data_dir: Path
    name: str
    capacity: HostCapacity
    node_ip: str | None = None
    ray_temp_dir: Path | None = None  # default <data_dir>/ray
    secret: str = ""  # the cluster secret: signs the replicas' stream requests (tokens.py)
    shared_dir: Path | None = None  # storage every host reads: workspaces move through it


def _die_with_parent() -> None:
    """In the node's child process: SIGTERM when this host process dies; signals unblocked."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})


def _ray_binary() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise SystemExit("the 'ray' command is missing: pip install ray")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def start_node(opts: HostOptions, temp_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """This host's Ray node (raylet and agents) with its node manager on ``port``, stopped
    when the returned process is."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        _ray_binary(),
        "start",
        "--address",
        opts.cluster,
        "--block",
        "--node-manager-port",
        str(port),
        "--num-cpus",
        "0",
        "--resources",
        json.dumps({**opts.capacity.ray_resources(), host_resource(opts.name): HOST_UNITS}),
        "--temp-dir",
        str(temp_dir),
        "--object-store-memory",
        str(OBJECT_STORE_BYTES),
        "--disable-usage-stats",
    ]
    if opts.node_ip:
        argv += ["--node-ip-address", opts.node_ip]
    # The engine adopts the runtimes' orphans (runtimes/reaper.py), so the sandboxes'
    # processes are children of the actor's worker. Ray kills a dead worker's children by
    # default, which would take a host's sandboxes down with it instead of leaving them for
    # the restarted host to re-attach.
    env = {
        **os.environ,
        "RAY_kill_child_processes_on_worker_exit": "false",
        "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper": "false",
    }
    logfile = open(temp_dir / "node.log", "ab")
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=logfile,
            preexec_fn=_die_with_parent,
            env=env,
        )
    finally:
        logfile.close()


def connect(opts: HostOptions, temp_dir: Path, node: subprocess.Popen[bytes], port: int) -> Any:
    """Attach this process to its own Ray node as a driver; return the ray module.

    After a crash, Ray still lists the host's previous node (same temp directory) as alive
    until its health checks fail: the driver waits until it attaches to the node whose node
    manager listens on ``port``, so that two lives of a host never overlap."""
    import ray

    deadline = time.monotonic() + NODE_WAIT
    while True:
        if node.poll() is not None:
            tail = (temp_dir / "node.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"the Ray node did not start (exit {node.returncode}):\n{tail}")
        try:
            kwargs: dict[str, Any] = {"_node_ip_address": opts.node_ip} if opts.node_ip else {}
            ray.init(
                address=opts.cluster,
                _temp_dir=str(temp_dir),
                namespace=NAMESPACE,
                log_to_driver=False,
                logging_level=logging.WARNING,
                **kwargs,
            )
            node_id = ray.get_runtime_context().get_node_id()
            nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
            if any(n["NodeID"] == node_id and n.get("NodeManagerPort") == port for n in nodes):
                return ray
            ray.shutdown()
            why = "Ray still lists this host's previous node as alive"
        except (ConnectionError, RuntimeError) as exc:
            why = str(exc)
        if time.monotonic() > deadline:
            raise SystemExit(f"could not join the Ray cluster at {opts.cluster}: {why}")
        time.sleep(1.0)


def run_host(opts: HostOptions) -> None:
    """Run the host until SIGTERM or SIGINT; then close the engine (sandboxes keep running and
    are re-attached when the host comes back) and stop the node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .host import HostActor

    temp_dir = opts.ray_temp_dir or opts.data_dir / "ray"
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    port = _free_port()
    node = start_node(opts, temp_dir, port)
    try:
        ray = connect(opts, temp_dir, node, port)
        node_id = ray.get_runtime_context().get_node_id()
        address = opts.node_ip or ray.util.get_node_ip_address()
        actor = (
            ray.remote(HostActor)
            .options(
                name=actor_name(opts.name),
                namespace=NAMESPACE,
                num_cpus=0,
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )
            .remote(opts.name, str(opts.data_dir), node_id, opts.secret, address, str(opts.shared_dir or ""))
        )
        ray.get(actor.open.remote())
        log.info("host %s ready on Ray node %s", opts.name, node_id)
        print(f"host {opts.name} ready on Ray node {node_id}", flush=True)
        _wait_for_stop(node)
        try:
            ray.get(actor.close.remote(), timeout=30)
        finally:
            ray.kill(actor)
            ray.shutdown()
    finally:
        if node.poll() is None:
            node.terminate()
            try:
                node.wait(30)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


def _wait_for_stop(node: subprocess.Popen[bytes]) -> None:
    """Return on SIGTERM or SIGINT; exit if the Ray node dies first."""
    while True:
        if signal.sigtimedwait({signal.SIGTERM, signal.SIGINT}, 1.0) is not None:
            return
        if node.poll() is not None:
            raise SystemExit(f"this host's Ray node exited ({node.returncode})")

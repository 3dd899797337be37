"""Issue 17 part 3 figures: fork of 1 and of 10 copies of a paused gVisor sandbox, per copy,
against a raw ``runsc restore`` of the same checkpoint measured in the same run; and fork of
a paused container sandbox (files only) against a cold create on the same daemon.

    .venv/bin/python -m bench.fork [--runs 5] [--big-runs 3]

Per-copy time is the wall time of one ``sandbox.fork(n)`` call through the daemon (HTTP, the
frozen layer, every restore, every copy's agent answering and reseeded) divided by n. The raw
baseline is ``runsc restore --detach`` alone, on a bundle and root filesystem prepared untimed
(the copy's own layers), with the engine's runsc flags and a cgroup; it stops there (no agent
handshake, no reseed), so it is a floor rather than a like-for-like.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from stockade import Sandbox
from stockade.images import ImageStore
from stockade import host

from ._common import PrivateDaemon, machine, median_ms, table

RUNSC_FLAGS = ["--platform=ptrace", "--network=none", "--host-uds=create", "--oci-seccomp"]
#: A process holding 20 MB, so the checkpoint is not only the agent's.
HOLDER = "import time\ndata = bytearray(20 << 20)\nwhile True:\n    time.sleep(1)\n"


def fork_per_copy(source: Sandbox, count: int, runs: int) -> tuple[list[float], str]:
    """Seconds per copy of ``runs`` forks of ``count``; and one copy's layer name."""
    samples = []
    layer = ""
    for _ in range(runs):
        t = time.perf_counter()
        copies = source.fork(count)
        samples.append((time.perf_counter() - t) / count)
        layer = copies[0].info.template
        assert copies[0].commands.run("echo ok").stdout == "ok\n"
        for copy in copies:
            copy.kill()
    return samples, layer


def raw_restore(data_dir: Path, source_id: str, layers: list[Path], i: int) -> float:
    """Seconds of one ``runsc restore`` of the source's checkpoint, on a fresh overlay of
    ``layers`` (the bundle and the mounts made untimed; the restored sandbox deleted after)."""
    source_dir = data_dir / "sandboxes" / source_id
    checkpoint = source_dir / "checkpoint"
    config = json.loads((source_dir / "bundle" / "config.json").read_text())
    root = data_dir / "runtime" / "bench-raw"
    work = Path(tempfile.mkdtemp(prefix="raw-", dir=data_dir))
    cid = f"benchraw{os.getpid()}x{i}"
    cgroup = f"stockade-bench-fork/{cid}"
    try:
        upper, rootfs, run = work / "upper", work / "rootfs", work / "run"
        run.mkdir()
        host.mount_overlay(":".join(map(str, layers)), upper, work / "work", rootfs, 0)
        bundle = work / "bundle"
        bundle.mkdir()
        spec = json.loads(json.dumps(config))
        spec["root"]["path"] = str(rootfs)
        for mount in spec["mounts"]:
            if mount["source"].startswith(str(source_dir)):
                mount["source"] = str(run)
        spec["linux"]["cgroupsPath"] = "/" + cgroup
        (bundle / "config.json").write_text(json.dumps(spec))
        with open(work / "runsc.log", "wb") as log:  # not a pipe: the sandbox keeps it
            t = time.perf_counter()
            code = subprocess.run(
                [
                    "runsc",
                    "--root",
                    str(root),
                    *RUNSC_FLAGS,
                    "restore",
                    "--image-path",
                    str(checkpoint),
                    "--bundle",
                    str(bundle),
                    "--detach",
                    cid,
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                timeout=120,
            ).returncode
            took = time.perf_counter() - t
        if code != 0:
            raise RuntimeError(f"raw runsc restore failed: {(work / 'runsc.log').read_text()}")
    finally:
        subprocess.run(
            ["runsc", "--root", str(root), *RUNSC_FLAGS, "delete", "--force", cid],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        asyncio.run(host.kill_cgroup(cgroup))  # whatever delete left
        for point in host.mounts_under(work):
            host.unmount(point)
        shutil.rmtree(work, ignore_errors=True)
        host.remove_cgroup(cgroup)
    host.remove_cgroup("stockade-bench-fork")
    shutil.rmtree(root, ignore_errors=True)
    return took


def gvisor(data_dir: Path, runs: int, big_runs: int) -> list[tuple[str, ...]]:
    with Sandbox.create(isolation="gvisor", timeout=3600) as source:
        source.files.write("/home/user/holder.py", HOLDER)
        source.commands.run("python3 /home/user/holder.py", background=True).disconnect()
        source.files.write("/home/user/state.txt", "forked")
        time.sleep(0.5)
        source.pause()
        time.sleep(3)  # the checkpointed runtime's release (runsc delete) is done
        keeper = source.fork(1)[0]  # holds a fork layer for the raw restores
        try:
            store = ImageStore(Path(os.environ["STOCKADE_IMAGES_DIR"]))
            layers = store.layers(keeper.info.template)
            one, raw = [], []
            for i in range(runs):  # interleaved, so that load drift hits both alike
                raw.append(raw_restore(data_dir, source.id, layers, i))
                one += fork_per_copy(source, 1, 1)[0]
            ten, _ = fork_per_copy(source, 10, big_runs)
        finally:
            keeper.kill()
    base = median_ms(raw)
    return [
        ("gvisor (paused, 20 MB process)", "raw runsc restore", f"{base:.0f} ms", "1.00x"),
        ("", "fork of 1, per copy", f"{median_ms(one):.0f} ms", f"{median_ms(one) / base:.2f}x"),
        ("", "fork of 10, per copy", f"{median_ms(ten):.0f} ms", f"{median_ms(ten) / base:.2f}x"),
    ]


def container(runs: int, big_runs: int) -> list[tuple[str, ...]]:
    cold: list[float] = []
    one: list[float] = []
    with Sandbox.create(isolation="container", timeout=3600) as source:
        source.files.write("/home/user/state.txt", "forked")
        source.pause()
        for _ in range(runs):  # interleaved, so that load drift hits both alike
            t = time.perf_counter()
            sb = Sandbox.create(isolation="container", timeout=600)
            sb.commands.run("true")
            cold.append(time.perf_counter() - t)
            sb.kill()
            one += fork_per_copy(source, 1, 1)[0]
        ten, _ = fork_per_copy(source, 10, big_runs)
    base = median_ms(cold)
    return [
        ("container (paused; files only)", "cold create + first command", f"{base:.0f} ms", "1.00x"),
        ("", "fork of 1, per copy", f"{median_ms(one):.0f} ms", f"{median_ms(one) / base:.2f}x"),
        ("", "fork of 10, per copy", f"{median_ms(ten):.0f} ms", f"{median_ms(ten) / base:.2f}x"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--big-runs", type=int, default=3, help="runs of the fork of 10")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with PrivateDaemon(pool_size=0) as daemon:
        rows = [("source", "what", "median", "ratio")]
        rows += gvisor(daemon.data_dir, args.runs, args.big_runs)
        rows += container(args.runs, args.big_runs)
    table(rows)


if __name__ == "__main__":
    main()

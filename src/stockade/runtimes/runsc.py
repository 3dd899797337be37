"""The gVisor tier: the same OCI bundle run by runsc, under gVisor's user-space kernel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from .. import host
from . import gvisor_compat, suspend
from .base import Capabilities, SandboxSpec
from .ocidriver import OciDriver


class RunscDriver(OciDriver):
    """``isolation="gvisor"``: the application talks to the Sentry, not the host kernel."""

    tier = "gvisor"
    #: Pause is ``runsc checkpoint`` to disk (bind-mounted volumes are outside the Sentry's
    #: memory, so they do not stop it), but not with a network: the 2022-12 netstack refuses to
    #: save a TCP endpoint that is not fully closed (even one in TIME-WAIT), and the failed
    #: checkpoint takes the sandbox down; a networked gVisor sandbox pauses in RAM instead.
    capabilities = Capabilities(
        memory_pause=True,
        pause_to_disk=True,
        pause_to_disk_with_volumes=True,
        pty=True,
        volumes=True,
        network_policy=True,
        workspace=True,
        archive=True,
        files_snapshot=True,
        warm_pool=True,
        forks_files=True,
        forks_memory=True,
    )
    binary = "runsc"

    def global_flags(self, spec: SandboxSpec | None = None) -> list[str]:
        # ptrace is the platform that works on every host (ENVIRONMENT.md: kvm hangs here);
        # host-uds=create lets the agent listen on a socket in its bind-mounted run directory;
        # oci-seccomp makes gVisor apply the bundle's seccomp profile too (defence in depth).
        # network=sandbox: gVisor's own network stack on the namespace the engine prepared.
        network = "sandbox" if spec is not None and spec.network is not None else "none"
        return [
            "--root",
            str(self.runtime_root),
            "--platform=ptrace",
            f"--network={network}",
            "--host-uds=create",
            "--oci-seccomp",
        ]

    async def extra_mounts(self) -> list[dict[str, Any]]:
        compat = await asyncio.to_thread(gvisor_compat.prepare, self.data_dir / "gvisor-compat")
        return gvisor_compat.mounts(compat)

    def launcher(self, spec: SandboxSpec) -> list[str]:
        # runsc runs in a private mount namespace of its own, made without the other
        # sandboxes' mounts: its sandbox and gofer processes copy the table they start from and
        # keep it for the sandbox's life, which would keep every other sandbox's disk busy after
        # its unmount (host.detach_sandbox_mounts). With a network, /proc/sys/net is hidden there
        # too: runsc 2022-12 takes "/proc/sys/net/core/rmem_default exists" to mean "this is the
        # host's network namespace" and refuses --network=sandbox; on kernels >= 6.x that file
        # exists in every namespace (only runsc's own processes see the change; the sandbox has
        # its own /proc).
        hide = "; mount -t tmpfs -o size=4k,mode=555 stockade-hide /proc/sys/net" if spec.network else ""
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            host.detach_sandbox_mounts(spec.directory) + hide + ' && exec "$@"',
            "sh",
        ]

    async def spawn(self, spec: SandboxSpec, args: list[str]) -> int:
        if spec.network is not None:
            await keep_address(spec)
        return await super().spawn(spec, args)

    # -- memory checkpoints (docs/persistence.md) ------------------------------------------------
    async def checkpoint(self, spec: SandboxSpec, image_dir: Path) -> None:
        await suspend.quiesce(spec, self.connect)
        image_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self.runtime("checkpoint", "--image-path", str(image_dir), spec.id, timeout=600)
        except BaseException:
            suspend.wake(spec)
            raise
        await asyncio.to_thread(suspend.seal, image_dir)

    async def restore(self, spec: SandboxSpec, image_dir: Path) -> None:
        await asyncio.to_thread(suspend.verify, image_dir)
        await self.reopen(spec)
        suspend.wake(spec)  # the restored agent finds it and listens again
        self.runtime_root.mkdir(parents=True, exist_ok=True)
        code = await self.spawn(
            spec,
            [
                "restore",
                "--image-path",
                str(image_dir),
                "--bundle",
                str(spec.directory / "bundle"),
                "--detach",
                spec.id,
            ],
        )
        if code != 0:
            raise suspend.CheckpointCorrupt(
                f"runsc could not restore the checkpoint in {image_dir} ({code}): {self.tail_log(spec, 600)}"
            )
        await self.await_agent(spec)


#: In a networked sandbox's directory: eth0's address and gateway, as the engine set them.
ADDRESS_FILE = "net-address.json"


async def keep_address(spec: SandboxSpec) -> None:
    """Give the namespace's ``eth0`` its address and routes back before runsc runs again.

    ``runsc --network=sandbox`` moves them into gVisor's own network stack and takes them off
    the namespace, so a stopped sandbox's next run would find an interface without an address
    and come up with loopback only. Recorded at the first run, restored at the next ones."""
    assert spec.network is not None
    netns, saved = spec.network.netns.name, spec.directory / ADDRESS_FILE
    addrs = await _ip_json(netns, "addr", "show", "dev", "eth0")
    found = [(a["local"], a["prefixlen"]) for link in addrs for a in link.get("addr_info", ())]
    if found:
        routes = await _ip_json(netns, "route", "show", "default")
        gateway = routes[0].get("gateway") if routes else None
        saved.write_text(json.dumps({"address": found[0][0], "prefix": found[0][1], "gateway": gateway}))
        return
    try:
        net = json.loads(saved.read_text())
    except (OSError, ValueError):
        return  # nothing recorded: runsc will say what it misses
    await host.run("ip", "-n", netns, "addr", "add", f"{net['address']}/{net['prefix']}", "dev", "eth0")
    if net.get("gateway"):
        await host.run("ip", "-n", netns, "route", "replace", net["gateway"], "dev", "eth0")
        await host.run("ip", "-n", netns, "route", "replace", "default", "via", net["gateway"], "dev", "eth0")


async def _ip_json(netns: str, *args: str) -> Any:
    return json.loads(await host.run("ip", "-n", netns, "-j", "-4", *args) or "[]")

"""The container tier: runc with a user namespace, seccomp, dropped capabilities, cgroups."""

from __future__ import annotations

import os

from ..host import reaper
from .base import Capabilities, SandboxSpec
from .oci import CPU_PERIOD_US
from .ocidriver import OciDriver

#: Host uid of root inside every container-tier sandbox (uids 0-65535 map above it).
DEFAULT_UID_BASE = int(os.environ.get("STOCKADE_UID_BASE", "1000000000"))


class RuncDriver(OciDriver):
    """``isolation="container"``: a hardened container on the host kernel."""

    tier = "container"
    #: Pause freezes the cgroup (memory stays in RAM): no process checkpoint here (CRIU fails).
    capabilities = Capabilities(
        memory_pause=True,
        pty=True,
        volumes=True,
        network_policy=True,
        workspace=True,
        archive=True,
        files_snapshot=True,
        warm_pool=True,
        forks_files=True,
        hot_resize=True,
    )
    binary = "runc"
    uid_base = DEFAULT_UID_BASE

    async def update_limits(self, spec: SandboxSpec) -> None:
        memory, cpu = str(spec.resources.memory_mb << 20), spec.resources.cpu
        await self.runtime(
            "update",
            f"--memory={memory}",
            f"--memory-swap={memory}",
            f"--cpu-quota={int(cpu * CPU_PERIOD_US)}",
            f"--cpu-period={CPU_PERIOD_US}",
            spec.id,
        )

    def run_args(self, spec: SandboxSpec) -> list[str]:
        # No session keyring per container: each one is a key charged to the container's host
        # uid, the same for every sandbox, whose quota (kernel.keys.maxkeys, 200) capped the
        # host at 200 live sandboxes. They inherit the engine's own, empty and private one.
        run, *rest = super().run_args(spec)
        return [run, "--no-new-keyring", *rest]

    async def spawn(self, spec: SandboxSpec, args: list[str]) -> int:
        reaper.private_session_keyring()  # on the thread that forks the runtime
        return await super().spawn(spec, args)

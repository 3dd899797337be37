"""What the runc and runsc drivers share: an OCI bundle on an overlay with a quota'd disk."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any, ClassVar

from ..images import ImageStore
from .. import host
from ..host import reaper
from .base import DriverError, RuntimeDriver, RuntimeState, SandboxSpec, Stats, greet
from .channel import AgentChannel, ChannelClosed
from .oci import build_config

AGENT_READY_TIMEOUT = 20.0
#: Longest pause between two attempts to reach an agent that is still starting.
AGENT_POLL_MAX = 0.005
#: How long a start or an archive waits for the last run's lazily unmounted disk to let go.
RELEASE_WAIT = 30.0


async def _connect_no_follow(socket: Path) -> AgentChannel:
    """Connect to the agent's socket, never to where a link planted by the sandbox points."""
    fd = os.open(socket, os.O_PATH | os.O_NOFOLLOW)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(f"{socket} is not a socket")
        return await AgentChannel.connect_unix(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class OciDriver(RuntimeDriver):
    """A tier run by an OCI runtime binary (runc, runsc)."""

    binary: ClassVar[str]
    #: Host uid that uid 0 inside maps to, or None to let the runtime isolate users itself.
    uid_base: ClassVar[int | None] = None

    @property
    def layer_uid_base(self) -> int:
        return self.uid_base or 0

    def __init__(self, data_dir: Path, images: ImageStore, agent_dir: Path) -> None:
        self.data_dir = data_dir
        self.images = images
        self.agent_dir = agent_dir
        self.runtime_root = data_dir / "runtime" / self.tier
        self.cgroup_parent = host.cgroup_parent(data_dir)
        #: Channels opened by start (which proves the agent answers), handed to the first
        #: connect so that the first command does not open a second one.
        self._ready: dict[str, AgentChannel] = {}
        #: Each sandbox's processes that the runtime orphaned to us, and the sessions of its
        #: processes (whose members may be orphaned to us later): ours to reap.
        self._pids: dict[str, set[int]] = {}
        self._sessions: dict[str, set[int]] = {}
        reaper.adopt_orphans()  # the sandboxes' processes: reaped at once when they end
        # The agent is mounted read-only, so a sandbox's Python cannot cache what it compiles:
        # compile it here once (a source checkout lacks bytecode for modules the host never
        # imports; without it every sandbox start compiles them again).
        compileall.compile_dir(str(agent_dir), maxlevels=0, quiet=2)

    # -- the runtime binary ----------------------------------------------------------------
    def global_flags(self, spec: SandboxSpec | None = None) -> list[str]:
        """Flags before the verb; ``spec`` is given when starting that sandbox."""
        return ["--root", str(self.runtime_root)]

    async def extra_mounts(self) -> list[dict[str, Any]]:
        """Mounts this runtime adds to every sandbox's bundle (none by default)."""
        return []

    def launcher(self, spec: SandboxSpec) -> list[str]:
        """A command prefix for ``run`` (none by default)."""
        return []

    async def runtime(self, *args: str, timeout: float = 60) -> str:
        return await host.run(self.binary, *self.global_flags(), *args, timeout=timeout)

    def cgroup(self, spec: SandboxSpec) -> str:
        return f"{self.cgroup_parent}/{spec.id}"

    # -- lifecycle ---------------------------------------------------------------------------
    async def create(self, spec: SandboxSpec) -> None:
        try:
            await self.reopen(spec)
        except BaseException:
            await self.destroy(spec)
            raise

    async def reopen(self, spec: SandboxSpec) -> None:
        d = spec.directory
        owner = self.uid_base or 0
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o711)
        # A lazily unmounted disk of the last run may still be on a loop device, its filesystem
        # alive until its last user lets go: mounting the image again meanwhile would put two
        # filesystems on one disk and corrupt it. Wait for it; refuse rather than risk that.
        if not host.mounted(d / "disk") and not await host.loop_released(d / "disk.img", RELEASE_WAIT):
            raise DriverError(
                f"the disk of sandbox {spec.id}'s last run is still held by the "
                f"kernel after {RELEASE_WAIT:.0f} s (a process of that run keeps "
                f"its filesystem busy); not mounting it twice: try again later"
            )
        await host.make_disk(
            d / "disk.img",
            d / "disk",
            spec.resources.disk_mb,
            owner,
            self.data_dir / "runtime" / "blank-disks",
        )
        # A snapshot template is its own layer over its parent's: lowerdir=child:parent:...
        lower = ":".join(str(p) for p in self.images.layers(spec.image, self.uid_base))
        await asyncio.to_thread(
            host.mount_overlay, lower, d / "disk" / "upper", d / "disk" / "work", d / "rootfs", owner
        )
        # On the sandbox's own disk, so what root inside writes there counts against its quota.
        run_dir = d / "disk" / "run"
        run_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(run_dir, owner, owner)
        (d / "bundle").mkdir(exist_ok=True)
        config = build_config(
            spec,
            rootfs=str(d / "rootfs"),
            run_dir=str(run_dir),
            agent_dir=str(self.agent_dir),
            uid_base=self.uid_base,
            cgroups_path="/" + self.cgroup(spec),
            runtime=self.binary,
            extra_mounts=await self.extra_mounts(),
        )
        (d / "bundle" / "config.json").write_text(json.dumps(config))

    def layer_file(self, spec: SandboxSpec) -> Path:
        return spec.directory / "disk.img"

    def run_args(self, spec: SandboxSpec) -> list[str]:
        d = spec.directory
        return ["run", "--detach", "--bundle", str(d / "bundle"), spec.id]

    async def start(self, spec: SandboxSpec) -> None:
        d = spec.directory
        socket = d / "disk" / "run" / "agent.sock"
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()
        self.runtime_root.mkdir(parents=True, exist_ok=True)
        code = await self.spawn(spec, self.run_args(spec))
        if code != 0:
            raise DriverError(f"{self.binary} run failed ({code}): {self.tail_log(spec)}")
        await self.await_agent(spec)

    async def spawn(self, spec: SandboxSpec, args: list[str]) -> int:
        """Run the runtime with ``args`` to start ``spec``'s sandbox; its output goes to the
        agent log. Returns its exit code."""
        with open(spec.directory / "agent.log", "ab") as log:
            child = host.spawn(
                *self.launcher(spec), self.binary, *self.global_flags(spec), *args, stdout=log, stderr=log
            )
        try:
            return await child.wait()
        except BaseException:
            await child.stop()
            raise

    async def await_agent(self, spec: SandboxSpec) -> None:
        """Wait until the agent answers; keep that channel for the first :meth:`connect`."""
        channel = await self.connect(spec)
        if old := self._ready.pop(spec.id, None):
            await old.aclose()
        self._ready[spec.id] = channel
        pids = host.cgroup_pids(self.cgroup(spec))
        self._pids[spec.id] = reaper.children(pids)
        self._sessions[spec.id] = reaper.sessions(pids)

    def tail_log(self, spec: SandboxSpec, size: int = 2000) -> str:
        try:
            data = (spec.directory / "agent.log").read_bytes()[-size:]
        except OSError:
            return "(no log)"
        return data.decode(errors="replace").strip() or "(empty log)"

    async def connect(self, spec: SandboxSpec) -> AgentChannel:
        ready = self._ready.pop(spec.id, None)
        if ready is not None and not ready.closed:
            return ready
        socket = spec.directory / "disk" / "run" / "agent.sock"
        deadline = time.monotonic() + AGENT_READY_TIMEOUT
        delay = 0.001
        while True:
            try:
                channel = await _connect_no_follow(socket)
                await greet(channel, 5)
                return channel
            except (OSError, ChannelClosed, asyncio.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise DriverError(
                        f"the agent of {spec.id} did not answer within "
                        f"{AGENT_READY_TIMEOUT:.0f} s ({exc}); agent log: "
                        f"{self.tail_log(spec)}"
                    ) from None
                # The sandbox's cgroup empties when its agent or runtime exits: asking the
                # runtime instead costs a process (20 to 200 ms) per attempt.
                if not host.cgroup_pids(self.cgroup(spec)):
                    raise DriverError(
                        f"sandbox {spec.id} is not running (its agent or runtime "
                        f"exited); agent log: "
                        f"{self.tail_log(spec)}"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, AGENT_POLL_MAX)

    async def state(self, spec: SandboxSpec) -> RuntimeState:
        if pids := self._pids.get(spec.id):  # an unreaped sandbox looks alive to runsc
            self._pids[spec.id] = reaper.reap(pids)
            reaper.reap_sessions(self._sessions.get(spec.id, set()))
        try:
            out = await self.runtime("state", spec.id, timeout=20)
        except DriverError:
            return RuntimeState.ABSENT
        status = json.loads(out).get("status", "")
        return {"running": RuntimeState.RUNNING, "paused": RuntimeState.PAUSED}.get(
            status, RuntimeState.STOPPED
        )

    async def stats(self, spec: SandboxSpec) -> Stats:
        return host.cgroup_stats(self.cgroup(spec))

    async def oom_kills(self, spec: SandboxSpec) -> int:
        return host.cgroup_oom_kills(self.cgroup(spec))

    async def pause(self, spec: SandboxSpec) -> None:
        await self._freeze_or_thaw(spec, "pause", RuntimeState.PAUSED)

    async def resume(self, spec: SandboxSpec) -> None:
        await self._freeze_or_thaw(spec, "resume", RuntimeState.RUNNING)

    async def _freeze_or_thaw(self, spec: SandboxSpec, verb: str, target: RuntimeState) -> None:
        """Run ``runtime pause|resume``; a sandbox already in ``target`` counts as done.

        A runtime killed half-way can have frozen or thawed the cgroup without the caller
        learning it: the retry then hears "container not paused" (security battery: "runtime
        SIGKILL during resume"). The cgroup's state, not the interrupted call, is the truth."""
        try:
            await self.runtime(verb, spec.id)
        except DriverError:
            if await self.state(spec) != target:
                raise

    async def stop(self, spec: SandboxSpec) -> None:
        if ready := self._ready.pop(spec.id, None):
            await ready.aclose()
        # Kill and reap first: the runtimes' own delete --force waits in 100 ms steps for
        # processes to vanish (and runsc's only vanish once reaped), ours return at once.
        pids = self._pids.pop(spec.id, set()) | reaper.adopted(host.cgroup_pids(self.cgroup(spec)))
        with contextlib.suppress(DriverError):
            await host.kill_cgroup(self.cgroup(spec), grace=2.0)
        await reaper.reap_killed(pids)
        reaper.reap_sessions(self._sessions.pop(spec.id, set()))
        # Twice if need be: a delete killed half-way leaves the runtime's state of the sandbox
        # behind (security battery: "runtime SIGKILL during kill"); a second one finishes it.
        for _ in range(2):
            try:
                await self.runtime("delete", "--force", spec.id, timeout=30)
                break
            except DriverError:
                if spec.id not in await self.known_ids():
                    break
        await asyncio.to_thread(self._drop_leftover_state, spec)
        await host.empty_cgroup(self.cgroup(spec))
        await asyncio.to_thread(self._unmount_all, spec.directory)
        host.remove_cgroup(self.cgroup(spec))

    def _drop_leftover_state(self, spec: SandboxSpec) -> None:
        """Remove the runtime's state of a sandbox that ``delete --force`` could not remove.

        A runtime killed half-way through a restore can leave state it cannot load again
        (runsc's ``<id>_sandbox:<id>.state``, runc's ``<id>/``): it is then missing from
        ``list``, ``delete`` fails, and the next ``run`` of that id says "container already
        exists" (security battery: "runtime SIGKILL during resume"). Its processes are already
        killed and reaped above."""
        for path in self.runtime_root.glob(f"{spec.id}*"):
            if path.name == spec.id or path.name.startswith(f"{spec.id}_sandbox:"):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    @staticmethod
    def _unmount_all(d: Path) -> None:
        for point in host.mounts_under(d):
            host.unmount(point)

    async def destroy(self, spec: SandboxSpec) -> None:
        await self.stop(spec)
        if host.mounts_under(spec.directory):
            raise DriverError(f"{spec.directory} still has mounts; not removing it")
        # The kernel detaches an autoclear loop device asynchronously after the unmount:
        # removing its image first would leave the device on a deleted file for a while.
        await host.loop_released(spec.directory / "disk.img", RELEASE_WAIT / 6)
        await asyncio.to_thread(shutil.rmtree, spec.directory, True)

    async def known_ids(self) -> set[str]:
        if not self.runtime_root.is_dir():
            return set()
        try:
            out = await self.runtime("list", "--quiet", timeout=30)
        except DriverError:
            return set()
        return {line.strip() for line in out.splitlines() if line.strip()}

"""A microVM's network interface and volumes: QEMU's device arguments and their host side.

**Network.** The engine prepares the sandbox's namespace as for every tier (net/links.py: a
routed veth whose namespace end ``eth0`` holds the sandbox's /32 address). For a microVM, the
driver then adds, inside that namespace, a tap device owned by the VM's uid and a bridge joining
it to ``eth0``, and takes the address off ``eth0``: the guest's own ``eth0`` (virtio-net on the
tap) takes the address over, so the host sees the same address behind the same veth and its
nftables policy, resolver and bandwidth limits apply unchanged. QEMU runs in that namespace
(``nsenter --net``) instead of an empty one, so that it can open the tap; it has no capability
there, so it can neither reconfigure the namespace nor open any other device.

**Settings share.** The guest learns its address, gateway, resolver and CA bundle, and where to
mount volumes, from a small read-only 9p share (tag ``stockade.cfg``) of the host directory
``<sandbox>/cfg``; its init (images/guest.py) copies it and unmounts it before starting the
agent, so that a networked microVM without volumes can still be paused to a file.

**Volumes.** Each volume's host directory (``<volume>/mnt``) is bind-mounted into the jail at
``/volumes/<n>`` (read-only when asked) and exported with ``virtio-9p-device``, with
``readonly=on`` too when asked, using ``security_model=mapped-xattr``: QEMU stays an
unprivileged, capability-less process; the guest's owners and modes live in ``user.virtfs.*``
extended attributes; files are created on the host owned by the VM's uid with mode 0644 (0755
for directories) so that container and gVisor sandboxes of the same volume can read them. See
"Networking and volumes" in docs/microvm.md for the threat-model cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..images.guest import CONFIG_TAG
from .. import host
from .base import DriverError, SandboxSpec

TAP = "tap0"
BRIDGE = "br0"
CONFIG_DIR = "cfg"
#: Where the jail shows the settings share and the volumes.
JAIL_CONFIG, JAIL_VOLUMES = "/cfg", "/volumes"
#: Why a microVM with volumes cannot be paused to a file (QEMU's own refusal, said earlier).
MIGRATION_BLOCKED = (
    "a microVM with volumes cannot be saved to a file: QEMU cannot save a "
    "guest's memory while a 9p volume export is mounted in it (it pauses in "
    "RAM instead)"
)


def needs_config(spec: SandboxSpec) -> bool:
    """Whether the guest gets the settings share (it has a network or volumes)."""
    return spec.network is not None or bool(spec.volumes)


def migration_blocker(spec: SandboxSpec) -> str | None:
    """Why ``spec``'s memory cannot be saved with QEMU's migration, or None if it can."""
    return MIGRATION_BLOCKED if spec.volumes else None


def volume_tag(index: int) -> str:
    return f"stockade.vol{index}"


def kernel_args(spec: SandboxSpec) -> list[str]:
    """Guest kernel command-line words: tell init to mount the settings share."""
    return ["stockade.cfg=1"] if needs_config(spec) else []


#: The network backend of a snapshot template VM (it has no namespace of its own) and of a
#: sandbox: the device's state migrates, its backend is the loading QEMU's.
TEMPLATE_NETDEV = "hubport,id=net0,hubid=0"
LIVE_NETDEV = f"tap,id=net0,ifname={TAP},script=no,downscript=no,vhost=off"


def qemu_args(spec: SandboxSpec, template: bool = False) -> list[str]:
    """QEMU arguments for the network interface, the settings share and the volumes. With
    ``template``, the same devices for a snapshot template VM (see :func:`prepare`)."""
    if not needs_config(spec):
        return []
    args = [
        "-fsdev",
        f"local,id=cfg,path={JAIL_CONFIG},security_model=none,readonly=on",
        "-device",
        f"virtio-9p-device,fsdev=cfg,mount_tag={CONFIG_TAG}",
    ]
    if spec.network is not None:
        args += [
            "-netdev",
            TEMPLATE_NETDEV if template else LIVE_NETDEV,
            "-device",
            f"virtio-net-device,netdev=net0,mac={mac_address(spec)}",
        ]
    for i, volume in enumerate(spec.volumes):
        readonly = ",readonly=on" if volume.read_only else ""
        args += [
            "-fsdev",
            f"local,id=vol{i},path={JAIL_VOLUMES}/{i},"
            f"security_model=mapped-xattr,fmode=0644,dmode=0755{readonly}",
            "-device",
            f"virtio-9p-device,fsdev=vol{i},mount_tag={volume_tag(i)}",
        ]
    return args


def live_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    """A template VM's command line for a sandbox restored from it: its tap as the backend."""
    return tuple(LIVE_NETDEV if arg == TEMPLATE_NETDEV else arg for arg in argv)


def layout(spec: SandboxSpec) -> str:
    """The device layout a snapshot template must share with ``spec`` (for its slot name)."""
    return ("-net" if spec.network is not None else "") + (
        "-v" + "".join("r" if v.read_only else "w" for v in spec.volumes) if spec.volumes else ""
    )


def mac_address(spec: SandboxSpec) -> str:
    """A locally administered MAC derived from the sandbox id (stable across restarts)."""
    digest = hashlib.sha256(spec.id.encode()).digest()
    return "52:54:" + ":".join(f"{b:02x}" for b in digest[:4])


def launcher(spec: SandboxSpec, template: bool = False) -> list[str]:
    """The command that puts the jail in its namespaces: the sandbox's network namespace when it
    has one (so QEMU can open its tap), a new empty one otherwise (and for a template VM)."""
    unshare = [
        "unshare",
        "--mount",
        "--pid",
        "--ipc",
        "--uts",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
    ]
    if spec.network is None or template:
        return [*unshare[:2], "--net", *unshare[2:], "--"]
    return ["nsenter", f"--net={spec.network.netns}", "--", *unshare, "--"]


async def prepare(spec: SandboxSpec, uid: int, template: bool = False) -> dict[str, Any]:
    """Make the host side of the devices (tap and bridge, settings share) and return what the
    jail adds: ``binds``, ``devices``, ``jail`` (more settings of the jail) and the largest file
    QEMU may write (``fsize``). With ``template`` (a snapshot template VM), the devices are there
    but unset: no tap, empty settings, empty directories behind the volume exports; a sandbox
    restored from it applies its own settings then (the agent's ``sys.setup``)."""
    if not needs_config(spec):
        return {"binds": [], "devices": [], "jail": {}, "fsize": 0}
    cfg = spec.directory / CONFIG_DIR
    cfg.mkdir(mode=0o755, exist_ok=True)
    if template:
        _write(cfg / "volumes", "")
        binds: list[list[Any]] = [[str(cfg), JAIL_CONFIG, False]]
        for i, volume in enumerate(spec.volumes):
            empty = spec.directory / f"volume{i}"
            empty.mkdir(mode=0o755, exist_ok=True)
            binds.append([str(empty), f"{JAIL_VOLUMES}/{i}", not volume.read_only])
        return {
            "binds": binds,
            "devices": [],
            "fsize": 0,
            "jail": {"proc": True, "umask": 0o022} if spec.volumes else {},
        }
    lines = []
    for i, volume in enumerate(spec.volumes):
        if any(ord(c) < 32 for c in volume.destination):
            raise DriverError(f"volume path {volume.destination!r} has a control character")
        lines.append(f"{volume_tag(i)} {'ro' if volume.read_only else 'rw'} {volume.destination}\n")
    _write(cfg / "volumes", "".join(lines))
    binds = [[str(cfg), JAIL_CONFIG, False]]
    devices: list[list[Any]] = []
    if spec.network is not None:
        address, gateway = await _wire_tap(spec, uid)
        _write(cfg / "net", f"{address} {gateway}\n")
        shutil.copyfile(spec.network.resolv_conf, cfg / "resolv.conf")
        (cfg / "resolv.conf").chmod(0o644)
        if spec.network.ca_bundle is not None:
            shutil.copyfile(spec.network.ca_bundle, cfg / "ca.crt")
            (cfg / "ca.crt").chmod(0o644)
        devices.append(["net/tun", 10, 200])
    fsize = 0
    for i, volume in enumerate(spec.volumes):
        if not Path(volume.source).is_dir():
            raise DriverError(f"volume directory {volume.source} is missing")
        binds.append([str(volume.source), f"{JAIL_VOLUMES}/{i}", not volume.read_only])
        st = os.statvfs(volume.source)
        fsize = max(fsize, st.f_blocks * st.f_frsize)
    # QEMU's 9p server reaches files through /proc/self/fd/N/..., and creates them with mode
    # fmode/dmode minus its umask (its own directory /vm stays 0700 either way).
    jail = {"proc": True, "umask": 0o022} if spec.volumes else {}
    return {"binds": binds, "devices": devices, "jail": jail, "fsize": fsize}


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


async def _ip_json(netns: str, *args: str) -> Any:
    return json.loads(await host.run("ip", "-n", netns, "-j", "-4", *args) or "[]")


async def _wire_tap(spec: SandboxSpec, uid: int) -> tuple[str, str]:
    """Bridge a tap owned by ``uid`` with the namespace's ``eth0`` and move the sandbox's address
    from ``eth0`` to the guest. Idempotent: a restart finds the tap made and reuses the address
    recorded then. Returns (address, gateway)."""
    assert spec.network is not None
    netns = spec.network.netns.name
    saved = spec.directory / CONFIG_DIR / "net"
    addresses = [
        a["local"]
        for link in await _ip_json(netns, "addr", "show", "dev", "eth0")
        for a in link.get("addr_info", ())
    ]
    if not addresses:
        try:
            address, gateway = saved.read_text().split()
        except (OSError, ValueError):
            raise DriverError(
                f"the network namespace of {spec.id} has no address on eth0 and none was recorded"
            ) from None
    else:
        routes = await _ip_json(netns, "route", "show", "default")
        if not routes or "gateway" not in routes[0]:
            raise DriverError(f"the network namespace of {spec.id} has no default route")
        address, gateway = addresses[0], routes[0]["gateway"]
    links = {link["ifname"] for link in await _ip_json(netns, "link", "show")}
    script = []
    if TAP not in links:
        script.append(f"tuntap add dev {TAP} mode tap user {uid} group {uid}")
    if BRIDGE not in links:
        script.append(f"link add {BRIDGE} type bridge")
    script += [
        f"link set eth0 master {BRIDGE}",
        f"link set {TAP} master {BRIDGE}",
        "route flush table main",
        "addr flush dev eth0",
        f"link set {BRIDGE} up",
        f"link set {TAP} up",
    ]
    batch = spec.directory / "net.batch"
    batch.write_text("\n".join(script) + "\n")
    try:
        await host.run("ip", "-n", netns, "-batch", str(batch))
    finally:
        batch.unlink(missing_ok=True)
    return address, gateway

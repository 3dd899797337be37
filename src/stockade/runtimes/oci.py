"""The OCI runtime spec (config.json) shared by the runc and runsc drivers."""

from __future__ import annotations

from typing import Any

from .base import AGENT_MOUNT, AGENT_SOCKET_DIR, SandboxSpec
from .seccomp import capabilities_spec, default_profile

#: Docker's masked and read-only paths.
MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
CPU_PERIOD_US = 100_000
#: The agent's command line inside the sandbox: the agent package is mounted at AGENT_MOUNT.
AGENT_ARGS = [
    "python3",
    "-I",
    "-S",
    "-c",
    "import sys; sys.path[:0] = ['/.stockade']; from agent.main import main; "
    f"main(['--listen', '{AGENT_SOCKET_DIR}/agent.sock'])",
]


def _tmpfs(destination: str, size: str, mode: str = "1777", extra: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", f"mode={mode}", f"size={size}", *extra],
    }


def build_config(
    spec: SandboxSpec,
    *,
    rootfs: str,
    run_dir: str,
    agent_dir: str,
    uid_base: int | None,
    cgroups_path: str,
    runtime: str,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return the OCI config for ``spec``. ``uid_base`` adds a user namespace (runc);
    ``extra_mounts`` are the driver's own (runsc's work-arounds)."""
    res = spec.resources
    memory = res.memory_mb << 20
    tmp_size = f"{max(16, min(res.memory_mb // 2, 1024))}m"
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
    namespaces.append(
        {"type": "network", "path": str(spec.network.netns)} if spec.network else {"type": "network"}
    )
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": {
            "memory": {"limit": memory, "swap": memory},
            "cpu": {"quota": int(res.cpu * CPU_PERIOD_US), "period": CPU_PERIOD_US},
            "pids": {"limit": res.pids},
            "devices": [{"allow": False, "access": "rwm"}],
        },
        "cgroupsPath": cgroups_path,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
        "seccomp": default_profile(runtime),
    }
    if uid_base is not None:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": uid_base, "size": 65536}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": uid_base, "size": 65536}]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": AGENT_ARGS,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "cwd": "/",
            "capabilities": capabilities_spec(),
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
            ],
            "noNewPrivileges": True,
            "oomScoreAdj": 500,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": spec.hostname,
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            _tmpfs("/dev", "65536k", "755", ("strictatime",)),
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            _tmpfs("/dev/shm", "64m", extra=("noexec",)),
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            _sysfs(spec, uid_base),
            _tmpfs("/tmp", tmp_size),
            {
                "destination": AGENT_MOUNT,
                "type": "bind",
                "source": agent_dir,
                "options": ["rbind", "ro", "nosuid", "nodev"],
            },
            {
                "destination": AGENT_SOCKET_DIR,
                "type": "bind",
                "source": run_dir,
                "options": ["rbind", "rw", "nosuid", "nodev", "noexec"],
            },
            *_network_mounts(spec),
            *_volume_mounts(spec),
            *(extra_mounts or []),
        ],
        "linux": linux,
    }


def _sysfs(spec: SandboxSpec, uid_base: int | None) -> dict[str, Any]:
    """sysfs needs the network namespace to belong to the sandbox's user namespace; one the
    engine prepared belongs to the host's, so a networked runc sandbox gets an empty /sys."""
    if spec.network is not None and uid_base is not None:
        return _tmpfs("/sys", "64k", "555", ("noexec", "ro"))
    return {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    }


def _network_mounts(spec: SandboxSpec) -> list[dict[str, Any]]:
    """The resolver's address and the operator's CA bundle, for a networked sandbox."""
    net = spec.network
    if net is None:
        return []
    files = [("/etc/resolv.conf", net.resolv_conf)]
    if net.ca_bundle is not None:
        files.append(("/etc/ssl/certs/ca-certificates.crt", net.ca_bundle))
    return [
        {
            "destination": dest,
            "type": "bind",
            "source": str(src),
            "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
        }
        for dest, src in files
    ]


def _volume_mounts(spec: SandboxSpec) -> list[dict[str, Any]]:
    """Named volumes (engine/volumes.py), bind-mounted read-write or read-only."""
    return [
        {
            "destination": v.destination,
            "type": "bind",
            "source": str(v.source),
            "options": ["rbind", "ro" if v.read_only else "rw", "nosuid", "nodev"],
        }
        for v in spec.volumes
    ]

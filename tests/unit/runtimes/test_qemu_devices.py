"""The microVM's device arguments: read-only volumes are read-only on the host side, a networked
VM joins its sandbox's namespace, a VM without either gets no extra device at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stockade.runtimes import qemu_devices
from stockade.runtimes.base import DriverError, NetworkAttachment, SandboxSpec, VolumeMount

NET = NetworkAttachment(
    netns=Path("/run/netns/stockade-abcde-sb1"), resolv_conf=Path("/nonexistent/resolv.conf")
)


def test_plain_vm_gets_nothing_and_an_empty_namespace() -> None:
    spec = SandboxSpec(id="sb1", image="base")
    assert qemu_devices.qemu_args(spec) == [] and qemu_devices.kernel_args(spec) == []
    assert "--net" in qemu_devices.launcher(spec) and "nsenter" not in qemu_devices.launcher(spec)
    assert asyncio.run(qemu_devices.prepare(spec, 1)) == {"binds": [], "devices": [], "jail": {}, "fsize": 0}
    assert qemu_devices.migration_blocker(spec) is None


def test_networked_vm_joins_its_namespace() -> None:
    spec = SandboxSpec(id="sb1", image="base", network=NET)
    launcher = qemu_devices.launcher(spec)
    assert launcher[:2] == ["nsenter", f"--net={NET.netns}"] and "--net" not in launcher
    args = " ".join(qemu_devices.qemu_args(spec))
    assert "virtio-net-device" in args and "ifname=tap0,script=no,downscript=no" in args
    assert qemu_devices.kernel_args(spec) == ["stockade.cfg=1"]
    assert qemu_devices.migration_blocker(spec) is None


def test_read_only_volumes_are_read_only_in_the_export_and_the_bind(tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir(), ro.mkdir()
    spec = SandboxSpec(
        id="sb1",
        image="base",
        directory=tmp_path / "sb",
        volumes=(VolumeMount(rw, "/data"), VolumeMount(ro, "/in", read_only=True)),
    )
    spec.directory.mkdir()
    fsdevs = [a for a in qemu_devices.qemu_args(spec) if a.startswith("local,id=vol")]
    assert len(fsdevs) == 2
    assert "readonly=on" not in fsdevs[0] and fsdevs[1].endswith("readonly=on")
    assert all("security_model=mapped-xattr" in f for f in fsdevs)
    prepared = asyncio.run(qemu_devices.prepare(spec, 1))
    assert [str(rw), "/volumes/0", True] in prepared["binds"]
    assert [str(ro), "/volumes/1", False] in prepared["binds"]
    assert prepared["jail"] == {"proc": True, "umask": 0o022}
    assert (spec.directory / "cfg" / "volumes").read_text() == (
        "stockade.vol0 rw /data\nstockade.vol1 ro /in\n"
    )
    assert "9p" in (qemu_devices.migration_blocker(spec) or "")


def test_volume_paths_with_control_characters_are_refused(tmp_path: Path) -> None:
    spec = SandboxSpec(
        id="sb1",
        image="base",
        directory=tmp_path,
        volumes=(VolumeMount(tmp_path, "/a\nstockade.vol9 rw /etc"),),
    )
    with pytest.raises(DriverError, match="control character"):
        asyncio.run(qemu_devices.prepare(spec, 1))


def test_template_vm_has_the_devices_but_none_of_the_sandboxs_settings(tmp_path: Path) -> None:
    """A snapshot template for a networked sandbox with volumes: the same devices (so a sandbox
    can load its memory), but no namespace, no tap, no settings and nothing of the real
    volumes; a sandbox restored from it gets its tap back as the backend."""
    real = tmp_path / "real-volume"
    real.mkdir()
    spec = SandboxSpec(
        id="sbtpl1",
        image="base",
        directory=tmp_path / "tpl",
        network=NET,
        volumes=(VolumeMount(real, "/data"), VolumeMount(real, "/in", True)),
    )
    spec.directory.mkdir()
    template = qemu_devices.qemu_args(spec, template=True)
    live = qemu_devices.qemu_args(spec)
    assert qemu_devices.TEMPLATE_NETDEV in template and qemu_devices.LIVE_NETDEV not in template
    assert qemu_devices.live_argv(tuple(template)) == tuple(live)
    assert "--net" in qemu_devices.launcher(spec, template=True)  # an empty namespace of its own
    prepared = asyncio.run(qemu_devices.prepare(spec, 1, template=True))
    assert prepared["devices"] == []  # no tun: no tap
    assert str(real) not in {bind[0] for bind in prepared["binds"]}
    assert [bind[1:] for bind in prepared["binds"]] == [
        ["/cfg", False],
        ["/volumes/0", True],
        ["/volumes/1", False],
    ]
    assert sorted(p.name for p in (spec.directory / "cfg").iterdir()) == ["volumes"]
    assert (spec.directory / "cfg" / "volumes").read_text() == ""  # nothing mounted in it
    assert qemu_devices.layout(spec) == "-net-vwr"

"""The snapshot-start template cache: keyed by everything a saved guest depends on, built once
however many creates ask at the same time, and never handed out half-built. A stand-in driver
and build keep this fast; tests/integration/test_microvm.py restores real guests."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from stockade.runtimes import qemu_snapshot
from stockade.runtimes.base import DriverError, Resources, SandboxSpec
from stockade.runtimes.qemu_snapshot import Machine, Templates


class FakeDriver:
    def __init__(self, root: Path) -> None:
        self.data_dir = root
        self.files = {name: root / name for name in ("vmlinux", "initrd", "image.ext4")}
        for path in self.files.values():
            path.write_text(path.name)

    async def machine(self, spec: SandboxSpec, template: bool = False) -> Machine:
        argv = (
            sys.executable,
            "-smp",
            "1",
            "-m",
            str(spec.resources.memory_mb),
            f"stockade.hostname={spec.hostname}",
        )
        return Machine(
            "tcg", argv, str(self.files["vmlinux"]), str(self.files["initrd"]), str(self.files["image.ext4"])
        )


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    cache = Templates(FakeDriver(tmp_path))  # type: ignore[arg-type]
    cache.builds = []  # type: ignore[attr-defined]

    async def build(spec: SandboxSpec, slot: str, key: str, target: Path) -> None:
        cache.builds.append(key)  # type: ignore[attr-defined]
        half = target.with_name(".b-test")
        half.mkdir()
        await asyncio.sleep(0.2)  # others ask meanwhile: they must wait, not see `half`
        (half / "disk.img").write_text("disk")
        (half / "manifest.json").write_text("{}")
        half.rename(target)

    monkeypatch.setattr(cache, "_build", build)
    return cache


def spec(**resources: Any) -> SandboxSpec:
    return SandboxSpec(id="sb1", image="base", resources=Resources(**resources))


async def test_concurrent_creates_build_one_template(templates: Any) -> None:
    found = await asyncio.gather(*(templates.ensure(spec()) for _ in range(5)))
    assert len(templates.builds) == 1
    assert len(set(found)) == 1 and (found[0] / "manifest.json").exists()
    await templates.ensure(spec())
    assert len(templates.builds) == 1


async def test_key_follows_guest_files_and_resources_not_the_sandbox(templates: Any) -> None:
    slot, key = await templates._key(spec())
    assert await templates._key(SandboxSpec(id="sb2", image="base")) == (slot, key)
    assert slot == "base-1cpu-512m-2048m-tcg"
    assert (await templates._key(spec(disk_mb=4096)))[1] != key
    assert (await templates._key(spec(memory_mb=1024)))[1] != key
    templates.driver.files["initrd"].write_text("a rebuilt initramfs")
    assert (await templates._key(spec()))[1] != key


async def test_a_failed_build_is_not_retried_at_once(templates: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(*args: Any) -> None:
        templates.builds.append("failed")
        raise DriverError("the template VM did not boot")

    monkeypatch.setattr(templates, "_build", fail)
    for _ in range(3):
        with pytest.raises(DriverError, match="did not boot"):
            await templates.ensure(spec())
    assert templates.builds == ["failed"]


def test_snapshot_start_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert qemu_snapshot.enabled()
    for value in ("0", "off", "false"):
        monkeypatch.setenv("STOCKADE_MICROVM_SNAPSHOT", value)
        assert not qemu_snapshot.enabled()

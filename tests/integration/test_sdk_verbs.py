"""SDK verbs where users expect them: on the class with an id, or on an instance; sync and
async alike (``Sandbox.kill(id)`` and ``sandbox.kill()``)."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from stockade import AsyncSandbox, AsyncVolume, ConflictError, Sandbox, SandboxNotFound, Volume


def test_sync_verbs_on_the_class_and_on_an_instance(make_sandbox: Callable[..., Sandbox]) -> None:
    sb = make_sandbox()
    assert Sandbox.get_info(sb.id).id == sb.id == sb.get_info().id
    before = sb.get_info().expires_at
    Sandbox.set_timeout(sb.id, 600)
    assert sb.get_info().expires_at > before + 200
    sb.set_timeout(60)
    assert sb.get_info().expires_at < time.time() + 120
    Sandbox.pause(sb.id)
    assert sb.get_info().state == "paused"
    assert sb.connect() is sb and sb.get_info().state == "running"
    sb.pause()
    again = Sandbox.connect(sb.id)
    assert again.commands.run("echo back").stdout == "back\n"
    again.close()
    assert Sandbox.kill(sb.id) is True
    assert Sandbox.kill(sb.id) is False  # already gone: nothing to do, and it says so
    with pytest.raises(SandboxNotFound):
        Sandbox.get_info(sb.id)
    sb.kill()  # killing a dead sandbox through its object is a no-op


async def test_async_verbs_on_the_class_and_on_an_instance(daemon: Any) -> None:
    sb = await AsyncSandbox.create(timeout=120)
    try:
        assert (await AsyncSandbox.get_info(sb.id)).state == "running"
        await AsyncSandbox.pause(sb.id)
        assert (await sb.get_info()).state == "paused"
        assert await sb.connect() is sb
        assert (await sb.get_info()).state == "running"
        await AsyncSandbox.set_timeout(sb.id, 90)
        assert (await sb.get_info()).timeout == 90
    finally:
        assert await AsyncSandbox.kill(sb.id) is True
        await sb.kill()
    assert await AsyncSandbox.kill(sb.id) is False


def test_volume_delete_by_name_or_instance(make_sandbox: Callable[..., Sandbox]) -> None:
    first, second = Volume.create("verbs-a", 16), Volume.create("verbs-b", 16)
    assert isinstance(first, Volume) and first.size_mb == 16
    sb = make_sandbox(volumes={"/data": first})
    with pytest.raises(ConflictError):
        first.delete()  # mounted: refused, nothing lost
    assert Volume.get("verbs-a").mounted_by == [sb.id]
    sb.kill()
    first.delete()
    Volume.delete(second.name)
    assert {"verbs-a", "verbs-b"}.isdisjoint(v.name for v in Volume.list())


async def test_async_volume_delete_by_name_or_instance(daemon: Any) -> None:
    vol = await AsyncVolume.create("verbs-c", 16)
    await vol.delete()
    vol = await AsyncVolume.create("verbs-c", 16)
    await AsyncVolume.delete("verbs-c")
    assert "verbs-c" not in {v.name for v in await AsyncVolume.list()}

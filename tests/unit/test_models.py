"""The shared models: requests strict with clear errors, results tolerant of newer servers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stockade.models import (
    EntryInfo,
    NetworkPolicy,
    ProcessSelector,
    ProcessSpec,
    SandboxInfo,
    SandboxSpec,
    VolumeMount,
)

INFO = {
    "id": "sb1",
    "isolation": "gvisor",
    "template": "base",
    "state": "running",
    "cpu": 1.0,
    "memory_mb": 512,
    "disk_mb": 2048,
    "pids": 512,
    "created_at": 1.0,
    "expires_at": 2.0,
    "timeout": 300.0,
}


def test_a_result_from_a_newer_server_is_read_by_an_older_sdk() -> None:
    info = SandboxInfo.model_validate({**INFO, "gpu": "h100", "placement": {"host": "a"}})
    assert info.id == "sb1" and info.isolation == "gvisor" and info.reason is None
    entry = EntryInfo.model_validate(
        {
            "name": "f",
            "path": "/f",
            "type": "file",
            "size": 1,
            "mode": 0o644,
            "permissions": "-rw-r--r--",
            "owner": "u",
            "group": "u",
            "modified_time": 0.0,
            "xattrs": {},
        }
    )
    assert entry.size == 1


def test_results_and_requests_are_frozen() -> None:
    info = SandboxInfo.model_validate(INFO)
    with pytest.raises(ValidationError):
        info.state = "paused"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SandboxSpec().isolation = "microvm"  # type: ignore[misc]


def test_an_unknown_request_field_is_named() -> None:
    with pytest.raises(ValidationError, match="isolaton"):
        SandboxSpec.model_validate({"isolaton": "gvisor"})


def test_aliases_and_defaults_are_resolved_once() -> None:
    spec = SandboxSpec.model_validate(
        {"network": "none", "volumes": {"/data": "v1", "/ro": {"volume": "v2", "read_only": True}}}
    )
    assert spec.network is None
    assert spec.volumes == [
        VolumeMount(volume="v1", path="/data"),
        VolumeMount(volume="v2", path="/ro", read_only=True),
    ]
    policy = SandboxSpec.model_validate({"network": {"allow_out": ["pypi.org"]}}).network
    assert policy == NetworkPolicy(allow_out=["pypi.org"])
    assert SandboxSpec.model_validate(spec.model_dump()) == spec  # round trip, as over the wire


@pytest.mark.parametrize(
    "body, message",
    [
        ({"isolation": "docker"}, "isolation"),
        ({"volumes": {"/a": "v1", "/a/": "v2"}}, "same path"),
        ({"volumes": {"relative": "v1"}}, "pattern"),
        ({"volumes": {"/a": "Bad Name"}}, "pattern"),
        ({"timeout": 0}, "timeout"),
        ({"cpu": 1000}, "cpu"),
        ({"network": "all"}, "network"),
        ({"persistence": "forever"}, "persistence"),
    ],
)
def test_bad_sandbox_specs_are_refused_clearly(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SandboxSpec.model_validate(body)


def test_a_process_needs_exactly_one_command() -> None:
    with pytest.raises(ValidationError, match="exactly one of 'cmd'"):
        ProcessSpec()
    with pytest.raises(ValidationError, match="exactly one of 'cmd'"):
        ProcessSpec(cmd="ls", argv=["ls"])
    assert ProcessSpec(argv=["ls"]).agent_params() == {"argv": ["ls"], "env": {}, "stdin": False}


def test_a_process_is_selected_by_pid_or_tag() -> None:
    with pytest.raises(ValidationError, match="'pid' or 'tag'"):
        ProcessSelector()
    assert ProcessSelector(pid=3, tag="t").agent_params() == {"pid": 3}
    assert ProcessSelector(tag="t").agent_params() == {"tag": "t"}

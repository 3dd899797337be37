"""The process name an OOM report falls back to (engine/processes.command_name)."""

from __future__ import annotations

from stockade.engine.processes import command_name
from stockade.models import ProcessSpec


def test_the_program_is_named_as_the_kernel_would() -> None:
    assert command_name(ProcessSpec(argv=["/usr/bin/python3", "-c", "pass"])) == "python3"
    assert command_name(ProcessSpec(cmd="FOO=1 env nohup node app.js")) == "node"
    assert command_name(ProcessSpec(cmd="a-very-long-program-name --x")) == "a-very-long-pro"
    assert command_name(ProcessSpec(cmd="X=1")) == "sh"

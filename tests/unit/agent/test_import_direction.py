"""The arrows point one way: the agent imports only the standard library (it runs on whatever
python3 the image has), and the SDK never imports the server, the engine or the runtimes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src"
AGENT = SRC / "stockade" / "agent"


def _run(python: str, code: str, *flags: str) -> list[str]:
    out = subprocess.run(
        [python, *flags, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    found: list[str] = json.loads(out)
    return found


@pytest.mark.parametrize(
    "python", sorted({sys.executable, shutil.which("/usr/bin/python3") or sys.executable})
)
def test_agent_imports_only_the_standard_library(python: str) -> None:
    modules = sorted(f"agent.{m.stem}" for m in AGENT.glob("*.py") if m.stem != "__main__")
    assert "agent.main" in modules and "agent.processes" in modules
    code = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = [{str(AGENT.parent)!r}]\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "own = {'agent', '__main__'}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}\n"
        "                        - set(sys.stdlib_module_names) - own)))\n"
    )
    foreign = _run(python, code, "-I", "-S")
    assert foreign == [], f"the agent imports outside the standard library: {foreign}"


def test_sdk_imports_nothing_from_the_server_side() -> None:
    code = (
        "import json, sys\n"
        "import stockade, stockade.sdk, stockade.sdk.sync\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[:2] in (['stockade', 'server'], ['stockade', 'engine'],\n"
        "                                     ['stockade', 'runtimes'], ['stockade', 'images'],\n"
        "                                     ['stockade', 'agent']))\n"
        "print(json.dumps(bad))\n"
    )
    bad = _run(sys.executable, code)
    assert bad == [], f"importing the SDK pulled in: {bad}"


def test_the_check_can_fail() -> None:
    """The stdlib check really sees a third-party import (guards against a vacuous pass)."""
    code = (
        "import json, sys, httpx\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}"
        " - set(sys.stdlib_module_names) - {'__main__'})))\n"
    )
    assert "httpx" in _run(sys.executable, code)

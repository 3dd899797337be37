"""The interpreter server runs inside sandboxes on the image's own python3: it imports only the
standard library when it loads, and the Jupyter stack only inside the functions that start a
kernel, so a bash context works in an image without it."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

INTERPRETER = Path(__file__).resolve().parents[3] / "src" / "stockade" / "interpreter"
#: What a kernel context may import lazily: the Jupyter stack of the code-interpreter template.
#: (``charts`` registers a figure formatter inside the kernel: IPython, traitlets, matplotlib.)
KERNEL_STACK = {"zmq", "jupyter_client", "ipykernel", "IPython", "traitlets", "matplotlib"}


@pytest.mark.parametrize(
    "python", sorted({sys.executable, shutil.which("/usr/bin/python3") or sys.executable})
)
def test_interpreter_loads_on_the_standard_library_alone(python: str, tmp_path: Path) -> None:
    """Laid out as the engine uploads it (a package named ``stockade_interpreter``), every
    module loads under ``-I -S`` and pulls in nothing outside the standard library."""
    package = tmp_path / "stockade_interpreter"
    package.mkdir()
    for source in INTERPRETER.glob("*.py"):
        shutil.copy(source, package / source.name)
    modules = sorted(f"stockade_interpreter.{m.stem}" for m in package.glob("*.py"))
    assert {
        "stockade_interpreter.server",
        "stockade_interpreter.kernel",
        "stockade_interpreter.bash",
        "stockade_interpreter.__main__",
    } <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = [{str(tmp_path)!r}]\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "own = {'stockade_interpreter', '__main__'}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}\n"
        "                        - set(sys.stdlib_module_names) - own)))\n"
    )
    out = subprocess.run(
        [python, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert json.loads(out) == [], f"the interpreter imports outside the standard library: {out}"


def test_only_the_kernel_stack_is_imported_lazily() -> None:
    """Every import in the package, at any depth, is relative, of the standard library, or of
    the Jupyter stack inside a function."""
    found: dict[str, set[str]] = {}
    for path in sorted(INTERPRETER.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        in_functions = {
            id(node)
            for function in ast.walk(tree)
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root in sys.stdlib_module_names or root == "__future__":
                    continue
                where = "function" if id(node) in in_functions else "load time"
                found.setdefault(where, set()).add(root)
    assert "load time" not in found, f"imported when the server loads: {found['load time']}"
    assert found.get("function", set()) <= KERNEL_STACK, found
    assert found.get("function") == KERNEL_STACK  # the check sees the lazy imports at all

"""Every promise in SPECIFICATION.md points at a test or benchmark that exists: a renamed or
deleted test makes its promise point at nothing, and this test names it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "SPECIFICATION.md"
CODE = re.compile(r"`([^`]+)`")
ROW = re.compile(r"^\| ([A-Z]+\d+) \|")


def _defined(path: Path, names: list[str]) -> bool:
    text = path.read_text()
    return all(re.search(rf"^\s*(async )?(def|class) {re.escape(name)}\b", text, re.M) for name in names)


def _broken_references(row: str) -> list[str]:
    broken, current = [], None
    for ref in CODE.findall(row):
        ref = ref.strip()
        if ref.startswith("python -m bench."):
            module = ref.split()[2].removeprefix("bench.")
            if not (ROOT / "bench" / f"{module}.py").is_file():
                broken.append(ref)
            continue
        if ref.startswith("tests/") or (current is not None and ref.startswith("test_")):
            path_part, _, rest = ref.partition("::")
            # "test_x.py::..." after a full path: a file in the same directory
            base = ROOT if ref.startswith("tests/") else current.parent  # type: ignore[union-attr]
            current = base / path_part.split()[0]
            if not current.exists():
                broken.append(ref)
                current = None
                continue
        elif ref.startswith("::") and current is not None:
            rest = ref[2:]
        else:
            continue
        names = [re.sub(r"\[.*\]$", "", name) for name in rest.split("::") if name]
        if names and current.is_file() and not _defined(current, names):
            broken.append(f"{current.relative_to(ROOT)}::{rest}")
    return broken


def test_every_promise_points_at_something_that_exists() -> None:
    rows = [line for line in SPEC.read_text().splitlines() if ROW.match(line)]
    assert len(rows) > 100
    broken = {ROW.match(row).group(1): _broken_references(row) for row in rows}  # type: ignore[union-attr]
    assert {key: refs for key, refs in broken.items() if refs} == {}


def test_every_promise_names_a_test_or_a_benchmark() -> None:
    rows = [line for line in SPEC.read_text().splitlines() if ROW.match(line)]
    bare = [
        ROW.match(row).group(1)
        for row in rows  # type: ignore[union-attr]
        if not re.search(r"`(tests/|::|python -m bench\.)", row)
    ]
    assert bare == []


def test_promise_numbers_are_unique() -> None:
    keys = [m.group(1) for line in SPEC.read_text().splitlines() if (m := ROW.match(line))]
    assert len(keys) == len(set(keys))

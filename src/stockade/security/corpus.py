"""The attack corpus: one small program per attack, with its settings in header comments.

Each attack file starts with comment lines such as::

    # attack: what it tries, in one line
    # users: user root        (who runs it; default: user)
    # sandbox: fresh          (a sandbox of its own, killed after; default: the shared one)
    # mode: hog | flood       (handled specially by the runner; default: run to completion)
    # shell                   (run with sh instead of python3)

and prints one JSON line ``{"attack", "outcome", "detail"}`` (see attacks/_lib.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import stockade

LIBRARY = "_lib.py"


def default_corpus_dir() -> Path:
    """``tests/security/attacks`` of the source tree this package was installed from."""
    return Path(stockade.__file__).resolve().parents[2] / "tests" / "security" / "attacks"


@dataclass(frozen=True)
class Attack:
    """One attack program and how to run it."""

    name: str
    path: Path
    description: str
    users: tuple[str, ...] = ("user",)
    fresh: bool = False
    mode: str = "run"
    shell: bool = False

    @property
    def filename(self) -> str:
        return self.path.name

    def argv(self, directory: str) -> list[str]:
        return ["sh" if self.shell else "python3", f"{directory}/{self.filename}"]


def parse(path: Path) -> Attack:
    """Read an attack's header comments."""
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(":")
        fields[key.strip()] = value.strip()
    if "attack" not in fields:
        raise ValueError(f"{path} has no '# attack: ...' header line")
    mode = fields.get("mode", "run")
    if mode not in ("run", "hog", "flood"):
        raise ValueError(f"{path}: unknown mode {mode!r}")
    return Attack(name=path.stem, path=path, description=fields["attack"],
                  users=tuple(fields.get("users", "user").split()),
                  fresh=fields.get("sandbox") == "fresh", mode=mode, shell="shell" in fields)


def load_corpus(directory: Path | None = None) -> list[Attack]:
    """Every attack in ``directory`` (default: the source tree's), sorted by name."""
    directory = directory or default_corpus_dir()
    if not (directory / LIBRARY).is_file():
        raise FileNotFoundError(f"no attack corpus in {directory} (expected {LIBRARY} there); "
                                f"pass the tests/security/attacks directory of a Stockade checkout")
    return [parse(p) for p in sorted(directory.iterdir())
            if p.suffix in (".py", ".sh") and not p.name.startswith("_")]

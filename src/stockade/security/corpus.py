"""The attack corpus: one small program per attack, with its settings in header comments.

Each attack file starts with comment lines such as::

    # attack: what it tries, in one line
    # users: user root        (who runs it; default: user)
    # sandbox: fresh          (a sandbox of its own, killed after; default: the shared one)
    # mode: hog | flood       (handled specially by the runner; default: run to completion)
    # shell                   (run with sh instead of python3)
    # may-break               (may take its own sandbox down: batched last, see runner)
    # timeout: 10             (the command's timeout in seconds; default 60)
    # expect-microvm: blocked (the outcome expected on that tier, or per user:
    #                          user=blocked root=contained; checked by the tests)

and prints one JSON line ``{"attack", "outcome", "detail"}`` (see attacks/_lib.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    may_break: bool = False
    timeout: float = 60.0
    #: Expected outcome per tier and user, where the attack states one (``# expect-<tier>:``).
    expect: dict[str, dict[str, str]] = field(default_factory=dict, compare=False, hash=False)

    def expected(self, tier: str, user: str) -> str | None:
        return self.expect.get(tier, {}).get(user)

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
    users = tuple(fields.get("users", "user").split())
    expect: dict[str, dict[str, str]] = {}
    for key, value in fields.items():
        if key.startswith("expect-"):
            tier = key[len("expect-") :]
            words = value.split()
            per_user = dict(w.split("=", 1) for w in words) if "=" in value else {u: value for u in users}
            for user, outcome in per_user.items():
                if user not in users or outcome not in ("blocked", "contained", "recovered"):
                    raise ValueError(
                        f"{path}: {key}: {value!r}: expected blocked, contained or "
                        f"recovered, per user of {users} (user=outcome)"
                    )
            expect[tier] = per_user
    return Attack(
        name=path.stem,
        path=path,
        description=fields["attack"],
        users=users,
        fresh=fields.get("sandbox") == "fresh",
        mode=mode,
        shell="shell" in fields,
        may_break="may-break" in fields,
        expect=expect,
        timeout=float(fields.get("timeout", 60)),
    )


def load_corpus(directory: Path | None = None) -> list[Attack]:
    """Every attack in ``directory`` (default: the source tree's), sorted by name."""
    directory = directory or default_corpus_dir()
    if not (directory / LIBRARY).is_file():
        raise FileNotFoundError(
            f"no attack corpus in {directory} (expected {LIBRARY} there); "
            f"pass the tests/security/attacks directory of a Stockade checkout"
        )
    return [
        parse(p)
        for p in sorted(directory.iterdir())
        if p.suffix in (".py", ".sh") and not p.name.startswith("_")
    ]

"""The Dockerfile subset Stockade builds templates from: FROM, RUN, COPY, ENV, WORKDIR, USER.

``parse(text)`` returns the steps, or raises :class:`DockerfileError` listing every line it
cannot accept, each with its number and what to write instead. Comments (``#``), blank lines and
line continuations (a trailing ``\\``) follow Docker's rules; so do RUN's and COPY's shell and
JSON ("exec") forms. ``expand(text, env)`` substitutes ``$VAR``/``${VAR}`` (with ``:-`` and
``:+``) as Docker does in ENV, WORKDIR, COPY and USER arguments.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass

from .store import NAME_RE

MAX_SIZE = 1 << 20
SUPPORTED = ("FROM", "RUN", "COPY", "ENV", "WORKDIR", "USER")
#: Instructions that change the filesystem, so make a layer (and a cache entry) each.
LAYERED = ("RUN", "COPY", "WORKDIR")
_HINTS = {
    "ADD": "use COPY for local files, or RUN curl/wget for URLs",
    "ARG": "use ENV",
    "CMD": "a sandbox has no main process; run commands with sandbox.commands.run",
    "ENTRYPOINT": "a sandbox has no main process; run commands with sandbox.commands.run",
    "EXPOSE": "ports are reached through the port proxy without it; delete the line",
    "LABEL": "delete the line",
    "MAINTAINER": "delete the line",
    "VOLUME": "mount a Stockade volume at create instead (Sandbox.create(volumes=...))",
    "HEALTHCHECK": "delete the line",
    "ONBUILD": "delete the line",
    "SHELL": 'write the shell into RUN, e.g. RUN ["/bin/zsh", "-c", "..."]',
    "STOPSIGNAL": "delete the line",
}
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")
_VAR = re.compile(r"\\\$|\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class DockerfileError(ValueError):
    """The Dockerfile uses something outside the subset; ``problems`` are ``(line, message)``."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"Dockerfile line {n}: {m}" for n, m in problems))


@dataclass(frozen=True)
class Step:
    """One instruction. ``args`` holds: FROM (template,); RUN exec form the argv, shell form
    (command,); COPY the sources then the destination; WORKDIR (path,); USER (name,);
    ENV the values, keyed by ``keys``."""

    line: int
    instruction: str
    text: str  # as written, continuations joined: shown in logs, part of the cache key
    args: tuple[str, ...]
    exec_form: bool = False
    keys: tuple[str, ...] = ()

    @property
    def layered(self) -> bool:
        """Whether the step changes files (and so makes a cached layer)."""
        return self.instruction in LAYERED


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """``(first line number, instruction text)``, comments dropped, continuations joined."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (pending and not stripped):
            continue  # comments (inside continuations too) and blank continued lines
        if not stripped:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        lines.append((start, " ".join(part.strip() for part in pending)))
        pending = []
    if pending:
        lines.append((start, " ".join(part.strip() for part in pending) + " \\"))
    return lines


def parse(text: str) -> list[Step]:
    """The steps of ``text``; raises :class:`DockerfileError` naming every bad line."""
    if len(text.encode()) > MAX_SIZE:
        raise DockerfileError([(1, f"the Dockerfile is larger than {MAX_SIZE} bytes")])
    if "\x00" in text:
        raise DockerfileError([(1, "the Dockerfile contains a NUL byte; is it a text file?")])
    steps: list[Step] = []
    problems: list[tuple[int, str]] = []
    for number, line in _logical_lines(text):
        if line.endswith(" \\"):
            problems.append(
                (number, "the last instruction ends with '\\' (a line continuation) but no line follows")
            )
            continue
        word, *rest = line.split(None, 1)
        try:
            steps.append(_step(number, word.upper(), rest[0].strip() if rest else "", line))
        except ValueError as exc:
            problems.append((number, str(exc)))
    froms = [s for s in steps if s.instruction == "FROM"]
    if steps and steps[0].instruction != "FROM":
        problems.append((steps[0].line, "the first instruction must be FROM <template>, e.g. FROM base"))
    for extra in froms[1:]:
        problems.append((extra.line, "only one FROM is supported (no multi-stage builds)"))
    if not steps and not problems:
        problems.append((1, "the Dockerfile is empty; start it with FROM <template>, e.g. FROM base"))
    if problems:
        raise DockerfileError(sorted(problems))
    return steps


def _step(number: int, word: str, rest: str, line: str) -> Step:
    if word not in SUPPORTED:
        hint = _HINTS.get(word)
        if hint is None:
            raise ValueError(f"unknown instruction {word!r}; Stockade supports {', '.join(SUPPORTED)}")
        raise ValueError(f"{word} is not supported: {hint}")
    if not rest:
        raise ValueError(f"{word} needs an argument")
    if rest.startswith("--") and word in ("FROM", "RUN", "COPY"):
        flag = rest.split()[0].split("=")[0]
        raise ValueError(
            f"{word} {flag} is not supported"
            + (
                "; add `RUN chown ...`/`RUN chmod ...` after the COPY"
                if flag in ("--chown", "--chmod")
                else ""
            )
        )
    make = {"FROM": _from, "RUN": _run, "COPY": _copy, "ENV": _env, "WORKDIR": _workdir, "USER": _user}[word]
    return make(number, line, rest)


def _from(number: int, line: str, rest: str) -> Step:
    parts = rest.split()
    if len(parts) > 1:
        raise ValueError("only 'FROM <template>' is supported (no 'AS name': no multi-stage builds)")
    name = parts[0]
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"FROM takes the name of a Stockade template (see `stockade image ls`), "
            f"such as 'base', not {name!r}; import a registry image first with "
            f"`stockade image import`"
        )
    return Step(number, "FROM", line, (name,))


def _json_form(rest: str) -> list[str] | None:
    """A JSON array of strings, or None if ``rest`` is not one (then it is shell form)."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _run(number: int, line: str, rest: str) -> Step:
    argv = _json_form(rest)
    if argv is None:
        return Step(number, "RUN", line, (rest,))
    if not argv or not argv[0]:
        raise ValueError('RUN [...] needs a program to run, e.g. RUN ["make", "install"]')
    return Step(number, "RUN", line, tuple(argv), exec_form=True)


def _copy(number: int, line: str, rest: str) -> Step:
    parts = _json_form(rest)
    if parts is None:
        try:
            parts = shlex.split(rest, posix=True)
        except ValueError as exc:
            raise ValueError(f"COPY: {exc}") from None
    if len(parts) < 2:
        raise ValueError("COPY needs a source and a destination: COPY <src>... <dest>")
    *sources, dest = parts
    if len(sources) > 1 and not dest.endswith("/"):
        raise ValueError(
            f"COPY with several sources needs a directory destination ending in '/', e.g. {dest}/"
        )
    for src in sources:
        if context_path(src) is None:
            raise ValueError(f"COPY source {src!r} is outside the build context")
    return Step(number, "COPY", line, (*sources, dest))


def context_path(src: str) -> str | None:
    """A COPY source as a normalised path relative to the context ("." for all of it), or None
    if it climbs out of it. A leading '/' means the context's root, as in Docker."""
    clean = posixpath.normpath(src.lstrip("/") or ".")
    return None if clean == ".." or clean.startswith("../") else clean


def _env(number: int, line: str, rest: str) -> Step:
    try:
        words = shlex.split(rest, posix=True)
    except ValueError as exc:
        raise ValueError(f"ENV: {exc}") from None
    if words and "=" not in words[0]:  # legacy form: ENV KEY the value
        key, _, value = rest.partition(" ")
        pairs = [(key, value.strip())]
        if not value.strip():
            raise ValueError(f"ENV {key} needs a value: ENV {key}=value")
    else:
        pairs = []
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise ValueError(f"ENV: {word!r} is not KEY=value")
            pairs.append((key, value))
    for key, _ in pairs:
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(
                f"ENV: {key!r} is not a valid variable name (letters, digits and "
                f"'_', not starting with a digit)"
            )
    return Step(number, "ENV", line, tuple(v for _, v in pairs), keys=tuple(k for k, _ in pairs))


def _workdir(number: int, line: str, rest: str) -> Step:
    path = _json_form(rest)
    if path is not None:
        if len(path) != 1:
            raise ValueError("WORKDIR takes one path")
        return Step(number, "WORKDIR", line, (path[0],))
    if len(shlex.split(rest)) != 1:
        raise ValueError("WORKDIR takes one path (quote it if it has spaces)")
    return Step(number, "WORKDIR", line, (shlex.split(rest)[0],))


def _user(number: int, line: str, rest: str) -> Step:
    name = rest.strip()
    if ":" in name:
        raise ValueError(
            "USER <name>:<group> is not supported; give the user name only (its primary group applies)"
        )
    if name.isdigit():
        raise ValueError(
            f"USER takes a user name, not a numeric id ({name}); create the user with `RUN useradd ...` first"
        )
    if not _USER.fullmatch(name) and "$" not in name:
        raise ValueError(f"USER: {name!r} is not a valid user name")
    return Step(number, "USER", line, (name,))


def expand(text: str, env: dict[str, str]) -> str:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alternative}`` from
    ``env`` (unset variables become ""); ``\\$`` is a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "\\$":
            return "$"
        name = match.group(1) or match.group(4)
        value = env.get(name, "")
        if match.group(2) == "-":
            return value or match.group(3)
        if match.group(2) == "+":
            return match.group(3) if value else ""
        return value

    return _VAR.sub(one, text)

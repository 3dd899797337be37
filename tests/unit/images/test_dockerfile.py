"""The Dockerfile subset parser: what it accepts, how it joins lines, what it refuses and where."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockade.images.dockerfile import DockerfileError, context_path, expand, parse


def test_every_supported_instruction_and_form() -> None:
    steps = parse("""# syntax comment
from base
RUN apt-get update && \\
    # a comment inside a continuation
    apt-get install -y x

run ["python3", "-c", "print(1)"]
COPY a "b c" /dst/
COPY ["only.txt", "/file"]
ENV A=1 B="two words" C=
ENV LEGACY the whole rest
WORKDIR /srv/app
USER builder
""")
    assert [(s.line, s.instruction) for s in steps] == [
        (2, "FROM"),
        (3, "RUN"),
        (7, "RUN"),
        (8, "COPY"),
        (9, "COPY"),
        (10, "ENV"),
        (11, "ENV"),
        (12, "WORKDIR"),
        (13, "USER"),
    ]
    run, exec_run, copy, copy_json, env, legacy = steps[1:7]
    assert run.args == ("apt-get update && apt-get install -y x",) and not run.exec_form
    assert exec_run.args == ("python3", "-c", "print(1)") and exec_run.exec_form
    assert copy.args == ("a", "b c", "/dst/")
    assert copy_json.args == ("only.txt", "/file")
    assert dict(zip(env.keys, env.args)) == {"A": "1", "B": "two words", "C": ""}
    assert dict(zip(legacy.keys, legacy.args)) == {"LEGACY": "the whole rest"}
    assert [s.layered for s in steps] == [False, True, True, True, True, False, False, True, False]


def test_run_that_is_not_a_json_array_is_shell_form() -> None:
    (_, step) = parse("FROM base\nRUN [ -f /x ] || echo no\n")
    assert step.args == ("[ -f /x ] || echo no",) and not step.exec_form


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("FROM base\nADD x /y\n", 2, "ADD is not supported: use COPY"),
        ('FROM base\nCMD ["x"]\n', 2, "no main process"),
        ("FROM base\nEXPOSE 80\n", 2, "port proxy"),
        ("FROM base\nARG V=1\n", 2, "use ENV"),
        ("FROM base\nFROBNICATE\n", 2, "unknown instruction 'FROBNICATE'"),
        ("RUN true\n", 1, "the first instruction must be FROM"),
        ("FROM base\nFROM base\n", 2, "only one FROM"),
        ("FROM base AS builder\n", 1, "no multi-stage"),
        ("FROM ubuntu:22.04\n", 1, "stockade image import"),
        ("FROM --platform=linux/amd64 base\n", 1, "FROM --platform is not supported"),
        ("FROM base\nRUN --mount=type=cache,target=/x true\n", 2, "RUN --mount is not supported"),
        ("FROM base\nCOPY --chown=user a /b\n", 2, "RUN chown"),
        ("FROM base\nCOPY a\n", 2, "needs a source and a destination"),
        ("FROM base\nCOPY a b /dir\n", 2, "ending in '/'"),
        ("FROM base\nCOPY ../secret /x\n", 2, "outside the build context"),
        ("FROM base\nCOPY /a/../../x /x\n", 2, "outside the build context"),
        ("FROM base\nENV 1BAD=x\n", 2, "not a valid variable name"),
        ("FROM base\nENV A=1 junk\n", 2, "is not KEY=value"),
        ("FROM base\nENV ALONE\n", 2, "needs a value"),
        ("FROM base\nWORKDIR /a /b\n", 2, "one path"),
        ("FROM base\nUSER 1000\n", 2, "not a numeric id"),
        ("FROM base\nUSER app:staff\n", 2, "<name>:<group> is not supported"),
        ("FROM base\nRUN\n", 2, "RUN needs an argument"),
        ("FROM base\nRUN echo \\\n", 2, "no line follows"),
        ("", 1, "empty"),
        ("# only a comment\n", 1, "empty"),
    ],
)
def test_refusals_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        parse(text)
    assert line in [n for n, _ in caught.value.problems]
    assert f"Dockerfile line {line}: " in str(caught.value)
    assert words in str(caught.value)


def test_every_bad_line_is_reported_at_once() -> None:
    with pytest.raises(DockerfileError) as caught:
        parse("FROM base\nADD a b\nRUN ok\nVOLUME /x\nLABEL a=b\n")
    assert [n for n, _ in caught.value.problems] == [2, 4, 5]


def test_continuation_lines_keep_the_first_line_number() -> None:
    steps = parse("FROM base\n\nRUN a \\\n  b \\\n\n  c\nUSER x\n")
    assert [(s.line, s.text) for s in steps[1:]] == [(3, "RUN a b c"), (7, "USER x")]


def test_context_paths() -> None:
    assert context_path(".") == "." and context_path("/") == "."
    assert context_path("/src/../app") == "app" and context_path("a/./b") == "a/b"
    assert context_path("..") is None and context_path("a/../../b") is None


def test_expand() -> None:
    env = {"A": "1", "PATH": "/bin"}
    assert expand("$A-${A}-${B:-dflt}-${A:+alt}-${B:+alt}-\\$A", env) == "1-1-dflt-alt--$A"
    assert expand("/opt/x:$PATH", env) == "/opt/x:/bin"


@given(st.text(max_size=300))
def test_parse_never_crashes(text: str) -> None:
    try:
        steps = parse("FROM base\n" + text)
    except DockerfileError as exc:
        assert exc.problems and all(n >= 1 for n, _ in exc.problems)
    else:
        assert steps[0].instruction == "FROM"


@given(
    st.lists(
        st.text(
            alphabet=st.characters(
                blacklist_categories=("Cs",),
                blacklist_characters="\x00\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
            ),
            min_size=1,
            max_size=20,
        ).filter(lambda s: s.strip() and not s.strip().startswith("#") and not s.rstrip().endswith("\\")),
        min_size=1,
        max_size=5,
    )
)
def test_shell_form_run_keeps_the_command(commands: list[str]) -> None:
    text = "FROM base\n" + "".join(f"RUN {c}\n" for c in commands)
    try:
        steps = parse(text)
    except DockerfileError:
        return  # e.g. a command starting with "--" (a flag)
    for step, command in zip(steps[1:], commands):
        if not step.exec_form:
            assert step.args == (command.strip(),)

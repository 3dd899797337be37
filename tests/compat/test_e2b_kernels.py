"""JavaScript and TypeScript code contexts, driven by the unmodified PyPI ``e2b-code-interpreter``
(and Stockade's own SDK once) against a real Stockade server and a real sandbox of the
code-interpreter template, where Debian's ``nodejs`` and ``node-typescript`` are installed."""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest
from e2b.exceptions import InvalidArgumentException, SandboxException, TimeoutException
from e2b_code_interpreter import Sandbox as CodeSandbox
from server_harness import Server, finish, needs_root, new_data_dir

from stockade import InvalidRequestError
from stockade import Sandbox as NativeSandbox
from stockade.config import default_images_dir

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    needs_root()
    template = default_images_dir() / "code-interpreter"
    if not (template / "image.json").exists():
        pytest.fail("no code-interpreter template: run scripts/install")
    if not (template / "rootfs" / "usr" / "bin" / "node").exists():
        pytest.fail(
            "the code-interpreter template predates nodejs: rebuild it with "
            "'.venv/bin/stockade image build --template code-interpreter --force'"
        )
    srv = Server(new_data_dir()).start()
    yield srv
    finish(srv)


@pytest.fixture(scope="module")
def key(server: Server) -> Iterator[str]:
    """A tenant's key; the E2B variables point the SDK at the server with it."""
    found = server.new_key("kernels")
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(E2B_API_URL=server.url + "/e2b", E2B_SANDBOX_URL=server.url + "/e2b", E2B_API_KEY=found)
    yield found
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def sb(key: str) -> Iterator[CodeSandbox]:
    """One code-interpreter sandbox shared by the module's tests."""
    box = CodeSandbox.create(timeout=600)
    yield box
    box.kill()


def test_javascript_cells_keep_state_print_and_return_the_last_value(sb: CodeSandbox) -> None:
    ex = sb.run_code("const x = 1 + 1; x", language="js")
    assert ex.error is None and ex.text == "2"
    ex = sb.run_code(
        "function twice(n) { return 2 * n }\nconsole.log('x is', x); twice(x) + 17", language="js"
    )
    assert ex.error is None and ex.text == "21" and ex.logs.stdout == ["x is 2\n"]
    ex = sb.run_code(
        "console.error('to stderr'); const os = require('os'); typeof os.cpus", language="javascript"
    )
    assert ex.logs.stderr == ["to stderr\n"] and ex.text == "'function'"
    # top-level await: its declarations become globals, its last expression is the result
    ex = sb.run_code(
        "const later = await new Promise(r => setTimeout(() => r(40), 20));\nlater + x", language="js"
    )
    assert ex.error is None and ex.text == "42"
    assert sb.run_code("later + twice(1)", language="js").text == "42"
    ex = sb.run_code("const a = [1, 2, 3].map(n => ({n}));\na", language="js")
    assert ex.text == "[ { n: 1 }, { n: 2 }, { n: 3 } ]"


def test_a_thrown_error_is_the_execution_error_and_the_context_goes_on(sb: CodeSandbox) -> None:
    ex = sb.run_code("let kept = 'yes';\nnull.property", language="js")
    assert ex.error is not None and ex.error.name == "TypeError"
    assert "null" in ex.error.value and "TypeError" in ex.error.traceback and not ex.results
    ex = sb.run_code("throw new RangeError('too far')", language="js")
    assert ex.error is not None and (ex.error.name, ex.error.value) == ("RangeError", "too far")
    assert sb.run_code("kept", language="js").text == "'yes'"


def test_typescript_cells_with_types_and_interfaces(sb: CodeSandbox) -> None:
    ex = sb.run_code(
        "interface Point { x: number; y: number }\n"
        "const p: Point = { x: 3, y: 4 };\n"
        "function norm(q: Point): number { return Math.hypot(q.x, q.y) }\n"
        "console.log(`norm ${norm(p)}`);\n"
        "norm(p) * 2",
        language="ts",
    )
    assert ex.error is None and ex.text == "10" and ex.logs.stdout == ["norm 5\n"]
    assert sb.run_code("norm({x: 6, y: 8} as Point)", language="typescript").text == "10"
    bad = sb.run_code("const broken: number = ;", language="ts")
    assert bad.error is not None and bad.error.name == "SyntaxError"
    # TypeScript and JavaScript contexts are separate: p exists only in the first
    assert sb.run_code("typeof p", language="js").text == "'undefined'"


def test_a_timeout_interrupts_an_endless_loop_and_the_context_lives_on(sb: CodeSandbox) -> None:
    sb.run_code("let survivor = 41", language="js")
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sb.run_code("while (true) {}", language="js", timeout=2)
    assert time.monotonic() - started < 15
    ex = sb.run_code("survivor + 1", language="js", timeout=30)
    assert ex.error is None and ex.text == "42"
    # an awaited promise that never settles is interrupted the same way
    with pytest.raises(TimeoutException):
        sb.run_code("await new Promise(() => {})", language="js", timeout=2)
    assert sb.run_code("survivor", language="js", timeout=30).text == "41"


def test_an_unknown_language_is_a_clear_error(sb: CodeSandbox) -> None:
    with pytest.raises((InvalidArgumentException, SandboxException)) as caught:
        sb.run_code("1", language="cobol")
    assert "cobol" in str(caught.value)


def test_native_sdk_runs_javascript_and_base_says_what_is_missing(server: Server, key: str) -> None:
    with NativeSandbox.create("code-interpreter", timeout=300, api_url=server.url, api_key=key) as box:
        ex = box.run_code("const parts = ['a', 'b'];\nparts.join('+')", language="javascript")
        assert ex.error is None and ex.text == "'a+b'"
        ctx = box.create_code_context(language="ts")
        assert ctx.language == "typescript"
        assert box.run_code("const n: number = parts.length; n", context=ctx).error is not None  # own state
        assert box.run_code("const m: number = 7; m", context=ctx).text == "7"
    # the base template has no node: a clear 400 naming the template that has
    with NativeSandbox.create(timeout=120, api_url=server.url, api_key=key) as plain:
        with pytest.raises(InvalidRequestError, match="code-interpreter"):
            plain.run_code("1", language="js")

"""Daytona's language servers through the unmodified ``daytona`` SDK: python-lsp-server runs
inside the sandbox (from the base image) and answers completions and symbols; what is not there
(TypeScript's server), an unknown language, a path walking out of the sandbox and another
tenant each get a clear error and start nothing."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
from server_harness import Server, sqlite_server  # noqa: E402,F401

from daytona import (  # noqa: E402
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
)
from daytona.common.lsp_server import LspCompletionPosition  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]
SHAPES = '''"""Shapes."""
UNIT = 1.0


class Circle:
    def __init__(self, radius: float) -> None:
        self.radius = radius


def area(circle: Circle) -> float:
    return 3.14159 * circle.radius**2
'''
MAIN = "import shapes\nshapes.\n"
SYMBOL_KINDS = {"Circle": 5, "area": 12, "UNIT": 13}  # LSP SymbolKind: class, function, variable


@pytest.fixture(scope="module")
def server(sqlite_server: Server) -> Server:  # noqa: F811
    return sqlite_server


@pytest.fixture(scope="module")
def acme_key(server: Server) -> str:
    return server.new_key("acme")


@pytest.fixture(scope="module")
def sandbox(server: Server, acme_key: str) -> Iterator[Any]:
    """One started sandbox with a small Python project in ``proj``."""
    acme = Daytona(DaytonaConfig(api_key=acme_key, api_url=f"{server.url}/daytona/api"))
    sb = acme.create(CreateSandboxFromSnapshotParams(labels={"team": "lsp"}))
    sb.fs.create_folder("proj", "755")
    sb.fs.upload_file(SHAPES.encode(), "proj/shapes.py")
    sb.fs.upload_file(MAIN.encode(), "proj/main.py")
    yield sb
    acme.delete(sb)


def _servers(sandbox: Any, program: str) -> int:
    """How many processes of ``program`` run in the sandbox (a killed one is given 5 s to go)."""
    deadline = time.monotonic() + 5
    while True:
        listed = sandbox.process.exec("ps -eo args").result.splitlines()
        found = sum(1 for line in listed if program in line and "ps -eo" not in line)
        if found == 0 or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_python_completions_symbols_open_close_and_stop(sandbox: Any) -> None:
    lsp = sandbox.create_lsp_server("python", "proj")
    lsp.start()
    lsp.start()  # a running server is kept, not started twice
    assert _servers(sandbox, "pylsp") == 1
    lsp.did_open("proj/main.py")
    found = lsp.completions("proj/main.py", LspCompletionPosition(line=1, character=7))
    # What each completion inserts, and its CompletionItemKind (pylsp labels a function with
    # its parameters: "area(circle)").
    kinds = {item.insert_text: item.kind for item in found.items}
    assert {"Circle": 7, "area": 3, "UNIT": 6}.items() <= kinds.items(), kinds
    assert "area(circle)" in {item.label for item in found.items}
    symbols = {s.name: s for s in lsp.document_symbols("proj/shapes.py")}
    for name, kind in SYMBOL_KINDS.items():
        assert symbols[name].kind == kind, (name, symbols[name])
        assert symbols[name].location.uri == "file:///home/user/proj/shapes.py"
    assert symbols["Circle"].location.range.start.line == 4
    assert symbols["area"].location.range.start.line == 9
    # Absolute paths work as well as the home-relative ones.
    assert "area" in {s.name for s in lsp.document_symbols("/home/user/proj/shapes.py")}
    lsp.did_close("proj/main.py")
    # python-lsp-server 1.7 has no workspace symbols: said plainly, and the server carries on.
    with pytest.raises(DaytonaError) as caught:
        lsp.sandbox_symbols("Circ")
    assert caught.value.status_code == 501 and "workspace/symbol" in str(caught.value)
    assert "shapes" in {i.label for i in lsp.completions("proj/main.py", LspCompletionPosition(0, 7)).items}
    lsp.stop()
    assert _servers(sandbox, "pylsp") == 0
    with pytest.raises(DaytonaError) as caught:
        lsp.completions("proj/main.py", LspCompletionPosition(line=1, character=7))
    assert caught.value.status_code == 404 and "start()" in str(caught.value)
    with pytest.raises(DaytonaError) as caught:
        lsp.stop()
    assert caught.value.status_code == 404


def test_what_is_missing_or_unknown_is_named(sandbox: Any) -> None:
    with pytest.raises(DaytonaError) as caught:
        sandbox.create_lsp_server("typescript", "proj").start()
    assert caught.value.status_code == 501
    assert "typescript-language-server is not installed" in str(caught.value)
    with pytest.raises(DaytonaError) as caught:
        sandbox.create_lsp_server("cobol", "proj").start()
    assert caught.value.status_code == 400 and "python, typescript, javascript" in str(caught.value)
    with pytest.raises(DaytonaError) as caught:
        sandbox.create_lsp_server("python", "no-such-project").start()
    assert caught.value.status_code == 404
    assert _servers(sandbox, "typescript-language-server") == 0 and _servers(sandbox, "pylsp") == 0


def test_paths_cannot_leave_the_sandbox(sandbox: Any) -> None:
    secret = Path("/var/tmp") / f"stockade-host-secret-{uuid.uuid4().hex}"
    secret.write_text("HOST-ONLY-TEXT = 1\n")
    lsp = sandbox.create_lsp_server("python", "proj")
    try:
        for project in ("proj/../../../etc", "../../../../" + str(secret.parent)):
            with pytest.raises(DaytonaError) as caught:
                sandbox.create_lsp_server("python", project).start()
            assert caught.value.status_code == 400 and "'..'" in str(caught.value)
        lsp.start()
        for bad in ("proj/../../../../" + str(secret), "../../../../../" + str(secret)):
            with pytest.raises(DaytonaError) as caught:
                lsp.did_open(bad)
            assert caught.value.status_code == 400, bad
            with pytest.raises(DaytonaError) as caught:
                lsp.document_symbols(bad)
            assert caught.value.status_code == 400, bad
        # A link made in the sandbox resolves inside it: the host's file is not there.
        sandbox.process.exec(f"ln -sf {secret} proj/out.py")
        with pytest.raises(DaytonaError) as caught:
            lsp.did_open("proj/out.py")
        assert caught.value.status_code == 404
        with pytest.raises(DaytonaError) as caught:
            lsp.document_symbols("proj/out.py")
        assert caught.value.status_code == 404 and "HOST" not in str(caught.value)
    finally:
        secret.unlink()
        lsp.stop()


def test_another_tenant_gets_404_and_starts_nothing(server: Server, sandbox: Any, acme_key: str) -> None:
    toolbox = f"{server.url}/daytona/toolbox/{sandbox.id}/lsp"
    body = {"languageId": "python", "pathToProject": "proj"}
    document = {**body, "uri": "file://proj/main.py"}
    with httpx.Client(headers={"Authorization": f"Bearer {server.new_key('globex')}"}, timeout=60) as c:
        for method, path, kwargs in [
            ("POST", "/start", {"json": body}),
            ("POST", "/did-open", {"json": document}),
            ("POST", "/completions", {"json": {**document, "position": {"line": 1, "character": 7}}}),
            ("GET", "/document-symbols", {"params": document}),
            ("GET", "/workspacesymbols", {"params": {**body, "query": "a"}}),
            ("POST", "/stop", {"json": body}),
        ]:
            r = c.request(method, toolbox + path, **kwargs)
            assert r.status_code == 404, (path, r.text)
            assert "shapes" not in r.text
    with httpx.Client(headers={"Authorization": f"Bearer {acme_key}"}, timeout=60) as c:
        for bad in ({}, {"languageId": "python"}, {**body, "uri": "http://x/main.py"}, "garbage"):
            r = c.post(toolbox + "/did-open", json=bad)
            assert r.status_code == 400 and r.json()["message"], (bad, r.text)
    assert _servers(sandbox, "pylsp") == 0


def test_async_clients_mix_and_a_stopped_sandbox_is_said(server: Server, sandbox: Any, acme_key: str) -> None:
    """``AsyncDaytona`` drives the same server; concurrent calls each get their own answer; a
    stopped sandbox's calls say so, and after a start the server is started anew."""
    config = DaytonaConfig(api_key=acme_key, api_url=f"{server.url}/daytona/api")

    async def main() -> None:
        async with AsyncDaytona(config) as d:
            sb = await d.get(sandbox.id)
            lsp = sb.create_lsp_server("python", "proj")
            await lsp.start()
            await lsp.did_open("proj/main.py")
            found = await asyncio.gather(
                *(lsp.completions("proj/main.py", LspCompletionPosition(1, 7)) for _ in range(4)),
                lsp.document_symbols("proj/shapes.py"),
                lsp.completions("proj/main.py", LspCompletionPosition(0, 7)),
            )
            for answer in found[:4]:
                assert {"Circle", "area", "UNIT"} <= {i.insert_text for i in answer.items}
            assert {"Circle", "area", "UNIT"} <= {s.name for s in found[4]}
            assert "shapes" in {i.label for i in found[5].items}

    asyncio.run(main())
    assert _servers(sandbox, "pylsp") == 1
    sandbox.stop()
    lsp = sandbox.create_lsp_server("python", "proj")
    for call in (lsp.start, lambda: lsp.completions("proj/main.py", LspCompletionPosition(1, 7))):
        with pytest.raises(DaytonaError) as caught:
            call()
        assert caught.value.status_code == 409 and "stopped" in str(caught.value), str(caught.value)
    sandbox.start()
    with pytest.raises(DaytonaError) as caught:  # the server went with the sandbox's processes
        lsp.completions("proj/main.py", LspCompletionPosition(1, 7))
    assert caught.value.status_code == 404 and "start()" in str(caught.value)
    lsp.start()
    lsp.did_open("proj/main.py")
    assert "area" in {
        i.insert_text for i in lsp.completions("proj/main.py", LspCompletionPosition(1, 7)).items
    }
    lsp.stop()

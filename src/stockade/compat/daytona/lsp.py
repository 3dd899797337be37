"""Toolbox language servers (``/lsp/...``): a language server runs as a process inside the
sandbox and the front end speaks LSP (JSON-RPC with ``Content-Length`` framing) over its stdin
and stdout, then renders the answers as Daytona's models.

One server per (sandbox, language, project directory): a process started by ``start`` with
stdin open and tagged ``daytona-lsp-<language>-<hash of the directory>`` (behind the waiting
prefix, so an idle server does not keep the sandbox from auto-stopping), stopped by ``stop``.
The front end keeps nothing: each call connects to the tagged process, which sends its output
from then on, writes one request with an id of its own, reads until the answer with that id
and lets go. So a server survives a server restart, and calls from several clients mix safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
from typing import Annotated, Any, AsyncGenerator, cast
from urllib.parse import quote, unquote

from fastapi import APIRouter, Query, Response
from pydantic import Field

from ...engine import Conflict, Engine, EngineError, NotFound, ProcessRun
from ...models import WAITING_TAG, ProcessSelector, ProcessSpec
from ._base import TOOLBOX, ControlDep, DaytonaError, DaytonaRoute, ToolboxSandbox
from .files import path_of
from .wire import Body

router = APIRouter(prefix=TOOLBOX + "/{sandboxId}/lsp", route_class=DaytonaRoute, tags=["daytona toolbox"])
#: Daytona's language ids -> the program serving them (and its arguments).
SERVERS = {
    "python": ["pylsp"],
    "typescript": ["typescript-language-server", "--stdio"],
    "javascript": ["typescript-language-server", "--stdio"],
}
#: What to tell a user whose sandbox lacks the program.
PACKAGES = {
    "pylsp": "python-lsp-server (Debian python3-pylsp, in Stockade's base image)",
    "typescript-language-server": "typescript-language-server (npm; no Stockade image carries it yet: "
    "build a template from a Dockerfile whose RUN steps install it)",
}
#: Runs the server, or exits 127 at once when the program is not installed.
LAUNCH = 'command -v "$1" >/dev/null 2>&1 || exit 127; exec "$@"'
#: Seconds a call waits for the server's answer (its first completion loads jedi, typeshed...).
ANSWER_WITHIN = 60.0
MAX_DOCUMENT = 8 << 20
#: The largest message taken from a server (the sandbox's program: it may be anything), and
#: how much of a stream without a header is kept while waiting for one.
MAX_MESSAGE, MAX_HEADER = 64 << 20, 4096
HEADER = re.compile(rb"Content-Length: *(\d+)\r\n(?:[^\r\n]*\r\n)*?\r\n", re.IGNORECASE)
Language = Annotated[str, Query(alias="languageId", min_length=1, max_length=32)]
Project = Annotated[str, Query(alias="pathToProject", min_length=1, max_length=4096)]


class ServerRequest(Body):
    language_id: str = Field(alias="languageId", min_length=1, max_length=32)
    path_to_project: str = Field(alias="pathToProject", min_length=1, max_length=4096)


class DocumentRequest(ServerRequest):
    uri: str = Field(min_length=1, max_length=4096)


class Position(Body):
    line: int = Field(ge=0, le=1 << 30)
    character: int = Field(ge=0, le=1 << 30)


class CompletionRequest(DocumentRequest):
    position: Position
    context: dict[str, Any] | None = None


def frame(message: dict[str, Any]) -> bytes:
    """One LSP message on the wire."""
    body = json.dumps({"jsonrpc": "2.0", **message}, separators=(",", ":")).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Reader:
    """LSP messages out of a byte stream. A connection may begin in the middle of a message
    (the server was already talking): bytes before the next header are skipped. JSON text
    holds no raw line breaks, so a header can never be read out of a body."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The whole messages read so far; ValueError for one over :data:`MAX_MESSAGE`."""
        self.buffer += data
        found = []
        while (match := HEADER.search(self.buffer)) is not None:
            if int(match.group(1)) > MAX_MESSAGE:
                raise ValueError(f"a message of {int(match.group(1))} bytes (at most {MAX_MESSAGE})")
            end = match.end() + int(match.group(1))
            if len(self.buffer) < end:
                self.buffer = self.buffer[match.start() :]
                break
            with contextlib.suppress(ValueError):
                message = json.loads(self.buffer[match.end() : end])
                if isinstance(message, dict):
                    found.append(message)
            self.buffer = self.buffer[end:]
        else:
            self.buffer = self.buffer[-MAX_HEADER:]  # no header yet: only its start may be here
        return found


def _language(language_id: str) -> list[str]:
    server = SERVERS.get(language_id)
    if server is None:
        raise DaytonaError(400, f"unsupported languageId {language_id!r}: use one of {', '.join(SERVERS)}")
    return server


def _tag(language_id: str, project: str) -> str:
    digest = hashlib.sha256(project.encode()).hexdigest()[:16]
    return f"{WAITING_TAG}daytona-lsp-{language_id}-{digest}"


def _uri(path: str) -> str:
    return "file://" + quote(path)


async def _project(eng: Engine, sandbox: str, path: str) -> str:
    """The project's absolute path in the sandbox (relative ones from the user's home)."""
    entry = await eng.files.stat(sandbox, path_of(path))
    if entry.type != "dir":
        raise DaytonaError(400, f"pathToProject {path!r} is not a directory")
    return entry.path


async def _document(eng: Engine, sandbox: str, uri: str) -> str:
    """A document's ``file://`` URI as the language server needs it: absolute. Daytona's SDK
    sends ``file://`` + the path as the user gave it, so the rest is a toolbox path."""
    if not uri.startswith("file://"):
        raise DaytonaError(400, f"uri {uri[:200]!r} must start with file://")
    entry = await eng.files.stat(sandbox, path_of(unquote(uri[len("file://") :])))
    if entry.type == "dir":
        raise DaytonaError(400, f"uri {uri[:200]!r} is a directory, not a document")
    if entry.type == "symlink":  # it must lead to a file, inside the sandbox (404 otherwise)
        chunks = cast(AsyncGenerator[bytes, None], await eng.files.read(sandbox, entry.path))
        try:
            await anext(chunks, b"")
        finally:
            await chunks.aclose()
    return entry.path


class Conversation:
    """One connection to a running language server: send messages, await one answer."""

    def __init__(self, run: ProcessRun, what: str) -> None:
        self.run, self.what, self.reader = run, what, Reader()
        self.events = cast(AsyncGenerator[dict[str, Any], None], run.events())
        self.stderr = b""
        self.exit_code: int | None = None
        self.ready = False

    async def started(self) -> None:
        """Wait for the agent's ``start`` event: from then on, output reaches us."""
        async for event in self.events:
            if event["type"] == "start":
                return
            if event["type"] == "end":
                break
        raise self._ended({})

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self.run.send_stdin(frame({"method": method, "params": params}))

    async def ask(self, method: str, params: dict[str, Any]) -> Any:
        """Send a request and return its result (LSP errors raised as Daytona's)."""
        ident = f"stockade-{secrets.token_hex(8)}"
        await self.run.send_stdin(frame({"id": ident, "method": method, "params": params}))
        try:
            async with asyncio.timeout(ANSWER_WITHIN):
                async for event in self.events:
                    if event["type"] == "end":
                        raise self._ended(event)
                    if event["type"] == "stderr":
                        self.stderr = (self.stderr + event["data"])[-2000:]
                    if event["type"] != "stdout":
                        continue
                    try:
                        messages = self.reader.feed(event["data"])
                    except ValueError as e:
                        raise DaytonaError(502, f"the {self.what} sent {e}") from None
                    for message in messages:
                        if message.get("id") == ident and "method" not in message:
                            return self._result(method, message)
                        if "id" in message and "method" in message:  # the server asks: no
                            await self.run.send_stdin(frame({"id": message["id"], "result": None}))
        except TimeoutError:
            raise DaytonaError(
                504, f"the {self.what} did not answer {method} in {ANSWER_WITHIN:.0f} s"
            ) from None
        raise self._ended({})

    def _result(self, method: str, message: dict[str, Any]) -> Any:
        error = message.get("error")
        if not isinstance(error, dict):
            return message.get("result")
        text = str(error.get("message", ""))[:500]
        if error.get("code") == -32601:
            raise DaytonaError(501, f"the {self.what} does not offer {method}")
        if error.get("code") == -32602:
            raise DaytonaError(400, f"the {self.what} refused {method}: {text}")
        raise DaytonaError(502, f"the {self.what} failed {method}: {text}")

    def _ended(self, end: dict[str, Any]) -> DaytonaError:
        why = self.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        self.exit_code = end.get("exit_code")
        return DaytonaError(502, f"the {self.what} ended (exit code {self.exit_code}): {' / '.join(why)}")

    async def close(self) -> None:
        await self.events.aclose()


@contextlib.asynccontextmanager
async def _connect(eng: Engine, sandbox: str, language_id: str, project: str) -> Any:
    """A conversation with the running server of ``language_id`` for ``project`` (404 without)."""
    what = f"{language_id} language server for {project}"
    missing = DaytonaError(404, f"no {what} runs: call start() first")
    try:
        run = await eng.processes.connect(sandbox, ProcessSelector(tag=_tag(language_id, project)))
    except NotFound:
        raise missing from None
    talk = Conversation(run, what)
    try:
        try:
            await talk.started()
        except NotFound:  # the agent says so on the stream
            raise missing from None
        yield talk
    finally:
        await talk.close()


async def _running(eng: Engine, sandbox: str, tag: str) -> bool:
    return any(p.tag == tag for p in await eng.processes.list(sandbox))


def _capabilities() -> dict[str, Any]:
    """What the front end can take: plain symbols (with locations) and completions."""
    return {
        "textDocument": {
            "synchronization": {"didSave": False},
            "completion": {"completionItem": {"snippetSupport": False}},
            "documentSymbol": {"hierarchicalDocumentSymbolSupport": False},
        },
        "workspace": {"symbol": {}},
    }


async def _initialize(talk: Conversation, project: str) -> None:
    params = {
        "processId": None,
        "rootUri": _uri(project),
        "rootPath": project,
        "workspaceFolders": [{"uri": _uri(project), "name": project.rsplit("/", 1)[-1] or "/"}],
        "capabilities": _capabilities(),
    }
    await talk.ask("initialize", params)
    await talk.notify("initialized", {})
    talk.ready = True


@router.post("/start")
async def start(body: ServerRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    """Start the server for the project and initialize it (a running one is kept)."""
    eng, server = ctl.engine, _language(body.language_id)
    project = await _project(eng, sandbox, body.path_to_project)
    tag = _tag(body.language_id, project)
    if await _running(eng, sandbox, tag):
        return Response(status_code=200)
    spec = ProcessSpec(
        argv=["/bin/sh", "-c", LAUNCH, "sh", *server], cwd=project, stdin=True, tag=tag, max_output=1 << 50
    )
    talk = Conversation(await eng.processes.start(sandbox, spec), f"{body.language_id} language server")
    try:
        await talk.started()
    except Conflict:  # started by another call just now: that one initializes it
        await talk.close()
        return Response(status_code=200)
    try:
        await _initialize(talk, project)
    except DaytonaError:
        if talk.exit_code == 127:
            raise DaytonaError(
                501,
                f"language server for {body.language_id}: {server[0]} is not installed in this "
                f"sandbox; it needs {PACKAGES[server[0]]}",
            ) from None
        raise
    finally:
        await talk.close()
        if talk.exit_code is None and not talk.ready:  # failed or cancelled half-way
            with contextlib.suppress(EngineError):
                await eng.processes.signal(sandbox, ProcessSelector(tag=tag), "KILL")
    return Response(status_code=200)


@router.post("/stop")
async def stop(body: ServerRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    """Stop the project's server (and whatever it started)."""
    _language(body.language_id)
    project = await _project(ctl.engine, sandbox, body.path_to_project)
    try:
        await ctl.engine.processes.signal(
            sandbox, ProcessSelector(tag=_tag(body.language_id, project)), "KILL"
        )
    except NotFound:
        raise DaytonaError(404, f"no {body.language_id} language server runs for {project}") from None
    return Response(status_code=200)


async def _open(ctl: ControlDep, sandbox: str, body: DocumentRequest) -> tuple[str, str]:
    _language(body.language_id)
    project = await _project(ctl.engine, sandbox, body.path_to_project)
    return project, await _document(ctl.engine, sandbox, body.uri)


@router.post("/did-open")
async def did_open(body: DocumentRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    """Tell the server the document is open, with its text as it is now."""
    eng = ctl.engine
    project, path = await _open(ctl, sandbox, body)
    data = bytearray()
    async with contextlib.aclosing(
        cast(AsyncGenerator[bytes, None], await eng.files.read(sandbox, path))
    ) as file:
        async for chunk in file:
            data += chunk
            if len(data) > MAX_DOCUMENT:
                raise DaytonaError(413, f"{path} is over {MAX_DOCUMENT >> 20} MiB: too large to open")
    text = data.decode("utf-8", "replace")
    document = {"uri": _uri(path), "languageId": body.language_id, "version": 1, "text": text}
    async with _connect(eng, sandbox, body.language_id, project) as talk:
        await talk.notify("textDocument/didOpen", {"textDocument": document})
    return Response(status_code=200)


@router.post("/did-close")
async def did_close(body: DocumentRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> Response:
    project, path = await _open(ctl, sandbox, body)
    async with _connect(ctl.engine, sandbox, body.language_id, project) as talk:
        await talk.notify("textDocument/didClose", {"textDocument": {"uri": _uri(path)}})
    return Response(status_code=200)


def _item(item: Any) -> dict[str, Any] | None:
    """A Daytona CompletionItem (documentation as MarkupContent, as the SDK's model wants)."""
    if not isinstance(item, dict) or not isinstance(item.get("label"), str):
        return None
    out: dict[str, Any] = {"label": item["label"]}
    for name in ("detail", "filterText", "insertText", "sortText"):
        if isinstance(item.get(name), str):
            out[name] = item[name]
    if isinstance(item.get("kind"), int):
        out["kind"] = item["kind"]
    documentation = item.get("documentation")
    if isinstance(documentation, str):
        out["documentation"] = {"kind": "plaintext", "value": documentation}
    elif isinstance(documentation, dict):
        out["documentation"] = documentation
    return out


@router.post("/completions")
async def completions(body: CompletionRequest, sandbox: ToolboxSandbox, ctl: ControlDep) -> dict[str, Any]:
    project, path = await _open(ctl, sandbox, body)
    params: dict[str, Any] = {
        "textDocument": {"uri": _uri(path)},
        "position": {"line": body.position.line, "character": body.position.character},
    }
    if body.context is not None:
        params["context"] = body.context
    async with _connect(ctl.engine, sandbox, body.language_id, project) as talk:
        found = await talk.ask("textDocument/completion", params)
    listed = found.get("items") if isinstance(found, dict) else found
    items = [x for x in map(_item, listed if isinstance(listed, list) else []) if x is not None]
    incomplete = isinstance(found, dict) and found.get("isIncomplete") is True
    return {"isIncomplete": incomplete, "items": items}


def _position(value: Any) -> dict[str, int]:
    value = value if isinstance(value, dict) else {}
    return {k: value[k] if isinstance(value.get(k), int) else 0 for k in ("line", "character")}


def _symbols(found: Any, uri: str) -> list[dict[str, Any]]:
    """Daytona's LspSymbols from SymbolInformation, WorkspaceSymbol or (flattened)
    DocumentSymbol answers."""
    out: list[dict[str, Any]] = []
    for symbol in found if isinstance(found, list) else []:
        if not isinstance(symbol, dict) or not isinstance(symbol.get("name"), str):
            continue
        location: dict[str, Any] = symbol["location"] if isinstance(symbol.get("location"), dict) else {}
        where = location.get("range") or symbol.get("selectionRange") or symbol.get("range")
        where = where if isinstance(where, dict) else {}
        out.append(
            {
                "name": symbol["name"],
                "kind": symbol["kind"] if isinstance(symbol.get("kind"), int) else 0,
                "location": {
                    "uri": location.get("uri") if isinstance(location.get("uri"), str) else uri,
                    "range": {
                        "start": _position(where.get("start")),
                        "end": _position(where.get("end")),
                    },
                },
            }
        )
        out.extend(_symbols(symbol.get("children"), uri))
    return out


@router.get("/document-symbols")
async def document_symbols(
    sandbox: ToolboxSandbox,
    ctl: ControlDep,
    language_id: Language,
    path_to_project: Project,
    uri: Annotated[str, Query(min_length=1, max_length=4096)],
) -> list[dict[str, Any]]:
    project, path = await _open(
        ctl, sandbox, DocumentRequest(languageId=language_id, pathToProject=path_to_project, uri=uri)
    )
    async with _connect(ctl.engine, sandbox, language_id, project) as talk:
        found = await talk.ask("textDocument/documentSymbol", {"textDocument": {"uri": _uri(path)}})
    return _symbols(found, _uri(path))


@router.get("/workspacesymbols")
async def workspace_symbols(
    sandbox: ToolboxSandbox,
    ctl: ControlDep,
    language_id: Language,
    path_to_project: Project,
    query: Annotated[str, Query(max_length=4096)] = "",
) -> list[dict[str, Any]]:
    """The server's ``workspace/symbol`` (501 where it has none, as python-lsp-server 1.7)."""
    _language(language_id)
    project = await _project(ctl.engine, sandbox, path_to_project)
    async with _connect(ctl.engine, sandbox, language_id, project) as talk:
        found = await talk.ask("workspace/symbol", {"query": query})
    return _symbols(found, _uri(project))

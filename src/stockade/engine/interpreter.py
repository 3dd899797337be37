"""Code contexts: stateful interpreters (Jupyter kernels, bash) inside sandboxes.

Each context is one run of the interpreter server (the package :mod:`stockade.interpreter`,
uploaded into the sandbox as ``stockade_interpreter``), started through the agent as
an ordinary process (tag ``stockade-code:<context id>``, stdin open) and spoken to in JSON lines:
requests on its stdin, events on its stdout. Nothing it prints is trusted: lines are
size-checked, parsed and validated here, so a cell that writes into the server's pipe can only
confuse its own execution. Executions in one context run one at a time; a caller that goes away
mid-cell has the cell interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from .. import interpreter
from ..interpreter.charts import MIME as CHART_MIME
from ..interpreter.wire import PROTOCOL
from .charts import check_bundle
from ..models import ProcessSelector, ProcessSpec
from .errors import Conflict, EngineError, InvalidRequest, NotFound, SandboxNotFound, SandboxUnavailable
from .process import ProcessRun

if TYPE_CHECKING:
    from .engine import Engine

#: The interpreter server's modules on the host, all uploaded into each sandbox.
SERVER_SOURCES = sorted(Path(interpreter.__file__).parent.glob("*.py"))
#: Where they go: a package named so that it shadows nothing the kernel or the image imports.
SERVER_PACKAGE = "/.stockade/interpreter/stockade_interpreter"
SERVER_ENTRY = f"{SERVER_PACKAGE}/__main__.py"
#: Longest event line accepted from a context (a result of MAX_OUTPUT plus JSON overhead).
MAX_LINE = 24 << 20
#: Seconds a context may take to start its kernel (gVisor and a cold page cache are slow).
START_TIMEOUT = 120.0
#: Extra seconds past an execution's timeout before the engine stops waiting for the context.
DEADLINE_SLACK = 15.0
LANGUAGE_RE = re.compile(r"^[a-z][a-z0-9+_.-]{0,31}$")
ALIASES = {"python3": "python", "py": "python", "sh": "bash", "shell": "bash"}


ENV_LANGUAGES = ("python", "bash")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
#: Bytes of per-execution environment (names and values) one request may set.
MAX_ENV_BYTES = 128 << 10


def _check_envs(envs: dict[str, str] | None) -> None:
    """Raise InvalidRequest for an environment a shell or ``os.environ`` cannot hold."""
    size = 0
    for name, value in (envs or {}).items():
        if not ENV_NAME.fullmatch(name):
            raise InvalidRequest(f"invalid environment variable name {name[:100]!r}")
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            encoded = b"\0"
        if b"\0" in encoded:
            raise InvalidRequest(f"environment variable {name} holds a NUL or a lone surrogate")
        size += len(name) + len(encoded) + 2
    if size > MAX_ENV_BYTES:
        raise InvalidRequest(f"per-execution envs take {size} bytes, more than {MAX_ENV_BYTES}")


class ContextDied(EngineError):
    """The context's interpreter process ended."""

    code = "context_died"
    status = 502


def normalize_language(language: str | None) -> str:
    """``python`` by default; aliases folded; raises InvalidRequest for a malformed name."""
    name = (language or "python").strip().lower()
    name = ALIASES.get(name, name)
    if not LANGUAGE_RE.fullmatch(name):
        raise InvalidRequest(f"invalid language {language!r}")
    return name


@dataclass
class Context:
    """One code context and the server process behind it."""

    id: str
    sandbox_id: str
    language: str
    cwd: str
    default: bool = False
    run: ProcessRun | None = None
    events: AsyncIterator[dict[str, Any]] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    buffer: bytearray = field(default_factory=bytearray)
    stderr_tail: bytearray = field(default_factory=bytearray)
    pending: asyncio.Future[dict[str, Any]] | None = None
    dead_reason: str = ""
    #: The engine lost its stream to the interpreter (a gVisor pause closes every channel),
    #: which may still run: the next request follows it again by its tag (:meth:`reattach`).
    detached: bool = False

    @property
    def tag(self) -> str:
        return f"stockade-code:{self.id}"

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "language": self.language, "cwd": self.cwd, "default": self.default}

    async def next_event(self) -> dict[str, Any]:
        """The next JSON line from the server; raises ContextDied when it ends."""
        while True:
            newline = self.buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self.buffer[:newline])
                del self.buffer[: newline + 1]
                event = _parse(line)
                if event is not None:
                    return event
                continue
            if len(self.buffer) > MAX_LINE:
                raise ContextDied(f"the context sent a line longer than {MAX_LINE} bytes")
            if self.dead_reason:
                raise ContextDied(self.dead_reason)
            assert self.events is not None
            if self.pending is None:
                self.pending = asyncio.ensure_future(anext(self.events))
            try:
                item = await asyncio.shield(self.pending)
            except (StopAsyncIteration, EngineError) as exc:
                self.pending = None
                self.detached = isinstance(exc, SandboxUnavailable)
                self.dead_reason = f"the context's interpreter stopped ({exc or 'no exit status'})"
                continue
            self.pending = None
            kind = item.get("type")
            if kind == "stdout":
                self.buffer += item["data"]
            elif kind == "stderr":
                self.stderr_tail = (self.stderr_tail + item["data"])[-2000:]
            elif kind == "end":
                how = (
                    f"exit status {item.get('exit_code')}"
                    if item.get("status") == "exited"
                    else str(item.get("status"))
                )
                tail = self.stderr_tail.decode(errors="replace").strip()
                self.dead_reason = f"the context's interpreter ended ({how})" + (
                    f": {tail[-1000:]}" if tail else ""
                )

    async def send(self, request: dict[str, Any]) -> None:
        assert self.run is not None
        try:
            await self.run.send_stdin(json.dumps(request).encode() + b"\n")
        except Exception as exc:  # noqa: BLE001 - the channel or process went away
            self.dead_reason = self.dead_reason or f"the context's interpreter is gone ({exc})"
            self.detached = True  # perhaps only the stream: reattach() finds out
            raise ContextDied(self.dead_reason) from None


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        return None
    return event if isinstance(event, dict) and isinstance(event.get("type"), str) else None


def _text(value: Any, limit: int = 1 << 30) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _validate(event: dict[str, Any]) -> dict[str, Any] | None:
    """Keep only well-formed execution events, with only the fields they may have."""
    kind = event["type"]
    if kind in ("stdout", "stderr"):
        return {"type": kind, "text": _text(event.get("text"))}
    if kind == "result":
        data = event.get("data")
        if not isinstance(data, dict):
            return None
        bundle = {
            k: v
            for k, v in data.items()
            if isinstance(k, str) and len(k) <= 255 and (isinstance(v, str) or k.endswith("json"))
        }
        return {"type": "result", "data": bundle, "is_main_result": bool(event.get("is_main_result"))}
    if kind == "error":
        return {
            "type": "error",
            "name": _text(event.get("name"), 1000),
            "value": _text(event.get("value")),
            "traceback": _text(event.get("traceback")),
        }
    if kind == "end":
        count = event.get("execution_count")
        return {
            "type": "end",
            "status": _text(event.get("status"), 32) or "ok",
            "execution_count": count if isinstance(count, int) else None,
        }
    return None


class CodeContexts:
    """Every code context of every sandbox of one engine."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine
        self._contexts: dict[str, dict[str, Context]] = {}
        self._installed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._default_locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _of(self, sandbox_id: str) -> dict[str, Context]:
        self.engine.record(sandbox_id)  # raises SandboxNotFound
        for gone in [s for s in self._contexts if s != sandbox_id and not self._alive(s)]:
            del self._contexts[gone]
            self._installed.discard(gone)
            for key in [k for k in self._default_locks if k[0] == gone]:
                del self._default_locks[key]
        return self._contexts.setdefault(sandbox_id, {})

    def _alive(self, sandbox_id: str) -> bool:
        try:
            self.engine.record(sandbox_id)
            return True
        except SandboxNotFound:
            return False

    def get(self, sandbox_id: str, context_id: str) -> Context:
        context = self._of(sandbox_id).get(context_id)
        if context is None:
            raise NotFound(f"no code context {context_id!r} in sandbox {sandbox_id}")
        return context

    # -- lifecycle ---------------------------------------------------------------------------
    async def create(
        self, sandbox_id: str, language: str | None = None, cwd: str | None = None, *, default: bool = False
    ) -> dict[str, Any]:
        """Start a new context and wait until its interpreter is ready."""
        contexts = self._of(sandbox_id)
        context = Context(
            id="ctx" + secrets.token_hex(8),
            sandbox_id=sandbox_id,
            language=normalize_language(language),
            cwd=cwd or "/home/user",
            default=default,
        )
        await self._start(context)
        contexts[context.id] = context
        return context.public()

    async def list(self, sandbox_id: str) -> list[dict[str, Any]]:
        return [c.public() for c in self._of(sandbox_id).values()]

    async def restart(self, sandbox_id: str, context_id: str) -> dict[str, Any]:
        """Start the context's interpreter afresh: same id, language and cwd, no state."""
        context = self.get(sandbox_id, context_id)
        async with context.lock:
            await self._stop(context)
            await self._start(context)
        return context.public()

    async def remove(self, sandbox_id: str, context_id: str) -> None:
        context = self.get(sandbox_id, context_id)
        self._contexts[sandbox_id].pop(context_id, None)
        async with context.lock:
            await self._stop(context)

    async def _install(self, sandbox_id: str) -> None:
        if sandbox_id in self._installed:
            return

        async def source(data: bytes) -> AsyncIterator[bytes]:
            yield data

        await asyncio.gather(
            *(
                self.engine.files.write(
                    sandbox_id,
                    f"{SERVER_PACKAGE}/{path.name}",
                    source(path.read_bytes()),
                    user="root",
                    mode=0o644,
                )
                for path in SERVER_SOURCES
            )
        )
        self._installed.add(sandbox_id)

    async def _start(self, context: Context) -> None:
        await self._install(context.sandbox_id)
        context.buffer.clear()
        context.stderr_tail.clear()
        context.dead_reason = ""
        context.pending = None
        context.run = await self.engine.processes.start(
            context.sandbox_id,
            ProcessSpec(
                argv=["python3", "-I", SERVER_ENTRY, "--language", context.language],
                cwd=context.cwd,
                tag=context.tag,
                stdin=True,
                max_output=1 << 60,
            ),
        )
        context.events = context.run.events()
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    event = await context.next_event()
                    if event["type"] == "ready":
                        break
                    if event["type"] == "fatal":
                        raise InvalidRequest(_text(event.get("message"), 2000))
        except ContextDied as exc:
            await self._stop(context)
            raise Conflict(f"the {context.language} context did not start: {exc.message}") from None
        except TimeoutError:
            await self._stop(context)
            raise Conflict(
                f"the {context.language} context did not start within {START_TIMEOUT:.0f} s"
            ) from None
        except BaseException:
            await self._stop(context)
            raise
        if event.get("protocol") != PROTOCOL:
            await self._stop(context)
            raise Conflict(f"the context speaks protocol {event.get('protocol')!r}, not {PROTOCOL}")

    async def _stop(self, context: Context) -> None:
        """Ask the server to shut down, then make sure it is gone."""
        if context.run is None:
            return
        if not context.dead_reason:
            with contextlib.suppress(EngineError):
                await context.send({"op": "shutdown"})
                await context.run.close_stdin()
            with contextlib.suppress(EngineError, TimeoutError):
                async with asyncio.timeout(5):
                    while True:
                        await context.next_event()
        with contextlib.suppress(EngineError):
            await self.engine.processes.signal(context.sandbox_id, ProcessSelector(tag=context.tag), "KILL")
        if context.pending is not None:
            context.pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await context.pending
            context.pending = None
        if context.events is not None:
            with contextlib.suppress(Exception):
                await context.events.aclose()  # type: ignore[attr-defined]
        context.run = context.events = None
        context.dead_reason = context.dead_reason or "stopped"

    async def _reattach(self, context: Context) -> bool:
        """Follow a detached context's interpreter again (same kernel, same variables);
        False if it is gone."""
        if not context.detached:
            return False
        context.detached = False
        try:
            run = await self.engine.processes.connect(context.sandbox_id, ProcessSelector(tag=context.tag))
        except EngineError:
            return False
        if context.events is not None:
            with contextlib.suppress(Exception):
                await context.events.aclose()  # type: ignore[attr-defined]
        context.run, context.events = run, run.events()
        context.buffer.clear()
        context.dead_reason = ""
        context.pending = None
        return True

    async def _default(self, sandbox_id: str, language: str) -> Context:
        async with self._default_locks.setdefault((sandbox_id, language), asyncio.Lock()):
            for context in self._of(sandbox_id).values():
                if context.default and context.language == language:
                    return context
            created = await self.create(sandbox_id, language, default=True)
            return self._contexts[sandbox_id][created["id"]]

    # -- executing ---------------------------------------------------------------------------
    async def execute(
        self,
        sandbox_id: str,
        code: str,
        *,
        language: str | None = None,
        context_id: str | None = None,
        timeout: float | None = None,
        envs: dict[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Run ``code``; return its events. The first (``start``) is ready before this returns,
        so that failures to find or start the context are raised here, not mid-stream.
        ``envs`` are environment variables of this execution only (python and bash)."""
        _check_envs(envs)
        if context_id is not None:
            context = self.get(sandbox_id, context_id)
            if language is not None and normalize_language(language) != context.language:
                raise InvalidRequest(
                    f"context {context_id} runs {context.language}, not {normalize_language(language)}"
                )
        else:
            context = await self._default(sandbox_id, normalize_language(language))
        if envs and context.language not in ENV_LANGUAGES:
            raise InvalidRequest(
                f"per-execution envs work in python and bash contexts, not {context.language}"
            )
        await context.lock.acquire()
        try:
            execution_id = secrets.token_hex(6)
            for attempt in (1, 2):  # a send may be what finds the stream lost: reattach once
                if (context.dead_reason or context.run is None) and not await self._reattach(context):
                    await self._stop(context)
                    await self._start(context)
                try:
                    await context.send(
                        {
                            "op": "execute",
                            "id": execution_id,
                            "code": code,
                            "timeout": timeout,
                            "env": envs or {},
                        }
                    )
                    break
                except ContextDied:
                    if attempt == 2 or not context.detached:
                        raise
        except BaseException:
            context.lock.release()
            raise
        return self._events(context, execution_id, timeout)

    async def _events(
        self, context: Context, execution_id: str, timeout: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        ended = False
        try:
            yield {"type": "start", "context_id": context.id, "language": context.language}
            deadline = None if timeout is None else timeout + DEADLINE_SLACK
            async with asyncio.timeout(deadline):
                while True:
                    try:
                        event = await context.next_event()
                    except ContextDied as exc:
                        ended = True
                        yield {
                            "type": "error",
                            "name": "ContextDied",
                            "value": f"{exc.message}; the context restarts on the next request",
                            "traceback": "",
                        }
                        yield {"type": "end", "status": "context_died", "execution_count": None}
                        return
                    if event.get("id") != execution_id:
                        continue
                    checked = _validate(event)
                    if checked is None:
                        continue
                    if checked["type"] == "result" and CHART_MIME in checked["data"]:
                        checked["data"], dropped = await asyncio.to_thread(check_bundle, checked["data"])
                        if dropped:
                            yield {"type": "stderr", "text": dropped}
                    if checked["type"] == "end":
                        ended = True
                    yield checked
                    if ended:
                        return
        except TimeoutError:
            ended = True
            await self._stop(context)
            context.dead_reason = "the context stopped answering and was killed"
            yield {
                "type": "error",
                "name": "ContextDied",
                "value": "the context did not answer after the timeout and was killed; it "
                "restarts on the next request",
                "traceback": "",
            }
            yield {"type": "end", "status": "timeout", "execution_count": None}
        finally:
            if ended:
                context.lock.release()
            else:  # the caller went away mid-cell: interrupt it and drain in the background
                task = asyncio.get_running_loop().create_task(self._abandon(context, execution_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _abandon(self, context: Context, execution_id: str) -> None:
        try:
            await context.send({"op": "interrupt", "id": execution_id})
            async with asyncio.timeout(DEADLINE_SLACK):
                while True:
                    event = await context.next_event()
                    if event.get("id") == execution_id and event.get("type") == "end":
                        return
        except (EngineError, TimeoutError):
            await self._stop(context)
        finally:
            context.lock.release()

"""Code execution (E2B's code-interpreter shape): contexts, executions, rich results."""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import httpx

from . import exceptions as exc
from ._transport import Api, raise_for_error, translate_transport

log = logging.getLogger("stockade.sdk")

#: MIME type -> Result attribute.
MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "application/vnd.stockade.chart+json": "chart",
}


@dataclass
class Result:
    """One output of a cell: its value (``is_main_result``) or something it displayed.

    Each MIME type the kernel sent is an attribute (``png`` and ``jpeg`` are base64 text, as
    Jupyter sends them; ``json`` is parsed); any other type is in ``extra``."""

    text: str | None = None
    html: str | None = None
    markdown: str | None = None
    svg: str | None = None
    png: str | None = None
    jpeg: str | None = None
    pdf: str | None = None
    latex: str | None = None
    json: Any = None
    javascript: str | None = None
    #: Structured data of a matplotlib figure (docs/code-interpreter.md, "Charts").
    chart: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    is_main_result: bool = False

    @classmethod
    def from_bundle(cls, data: dict[str, Any], is_main_result: bool = False) -> "Result":
        result = cls(is_main_result=is_main_result)
        for mime, value in data.items():
            name = MIME_FIELDS.get(mime)
            if name is None:
                result.extra[mime] = value
            else:
                setattr(result, name, value)
        return result

    def formats(self) -> list[str]:
        """The attributes that hold data, e.g. ``["text", "png"]``."""
        names = [n for n in MIME_FIELDS.values() if getattr(self, n) is not None]
        return names + list(self.extra)

    def __str__(self) -> str:
        return self.text or ""


@dataclass
class Logs:
    """What the cell printed, in the chunks it arrived in."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


@dataclass
class ExecutionError:
    """An exception the cell raised (or ``KernelDied``, ``OutputLimitExceeded``, ...)."""

    name: str
    value: str
    traceback: str


@dataclass
class Execution:
    """The outcome of one cell."""

    results: list[Result] = field(default_factory=list)
    logs: Logs = field(default_factory=Logs)
    error: ExecutionError | None = None
    execution_count: int | None = None
    status: str = ""
    context_id: str | None = None

    @property
    def text(self) -> str | None:
        """The text of the main result (the cell's value), if any."""
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None


@dataclass(frozen=True)
class Context:
    """A code context: its own interpreter state, language and working directory."""

    id: str
    language: str
    cwd: str
    default: bool = False


class ExecutionTimeout(exc.SandboxError):
    """The cell ran past its timeout and was interrupted (the context survives).

    ``execution`` holds what it produced until then."""

    def __init__(self, execution: Execution, timeout: float | None) -> None:
        super().__init__(f"the cell timed out after {timeout} s and was interrupted")
        self.execution = execution


Callback = Callable[[Any], Any]
#: Starting a kernel can take a while (a cold page cache, gVisor).
START_TIMEOUT = httpx.Timeout(180.0, connect=10.0)
Language = Literal["python", "bash"] | str


async def _call(callback: Callback | None, value: Any) -> None:
    if callback is None:
        return
    try:
        outcome = callback(value)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:  # noqa: BLE001 - a caller's callback must not break the stream
        log.exception("run_code callback failed")


async def run_code(
    api: Api,
    sandbox_id: str,
    code: str,
    *,
    language: str | None = None,
    context: Context | str | None = None,
    on_stdout: Callback | None = None,
    on_stderr: Callback | None = None,
    on_result: Callback | None = None,
    on_error: Callback | None = None,
    timeout: float | None = 300.0,
    envs: dict[str, str] | None = None,
) -> Execution:
    """POST the cell and fold the event stream into an :class:`Execution`."""
    body: dict[str, Any] = {"code": code}
    if envs:
        body["envs"] = envs
    if language is not None:
        body["language"] = language
    if context is not None:
        body["context_id"] = context.id if isinstance(context, Context) else context
    if timeout is not None:
        body["timeout"] = timeout
    client = api.client
    try:
        request = client.build_request(
            "POST",
            f"/sandboxes/{sandbox_id}/code/execute",
            json=body,
            timeout=httpx.Timeout(None, connect=10.0),
        )
        response = await client.send(request, stream=True)
    except httpx.TransportError as error:
        raise translate_transport(error) from None
    execution = Execution()
    try:
        if response.status_code >= 400:
            raise_for_error(response, await response.aread())
        async for line in response.aiter_lines():
            if not line:
                continue
            event = json.loads(line)
            kind = event.get("type")
            if kind == "stdout" or kind == "stderr":
                getattr(execution.logs, kind).append(event["text"])
                await _call(on_stdout if kind == "stdout" else on_stderr, event["text"])
            elif kind == "result":
                result = Result.from_bundle(event.get("data") or {}, bool(event.get("is_main_result")))
                execution.results.append(result)
                await _call(on_result, result)
            elif kind == "error":
                failure = ExecutionError(
                    event.get("name", ""), event.get("value", ""), event.get("traceback", "")
                )
                execution.error = execution.error or failure
                await _call(on_error, failure)
            elif kind == "start":
                execution.context_id = event.get("context_id")
            elif kind == "end":
                execution.execution_count = event.get("execution_count")
                execution.status = event.get("status", "")
            elif kind == "failure":
                raise exc.from_response(502, event)
    except httpx.TransportError as error:
        raise translate_transport(error) from None
    finally:
        await response.aclose()
    if not execution.status:
        raise exc.SandboxUnavailable(
            502, "sandbox_unavailable", "the execution's stream ended without an end event"
        )
    if execution.status == "timeout":
        raise ExecutionTimeout(execution, timeout)
    return execution


def _context(data: dict[str, Any]) -> Context:
    return Context(
        id=data["id"], language=data["language"], cwd=data["cwd"], default=bool(data.get("default"))
    )


async def create_context(api: Api, sandbox_id: str, language: str | None, cwd: str | None) -> Context:
    body = {k: v for k, v in (("language", language), ("cwd", cwd)) if v is not None}
    return _context(
        await api.request("POST", f"/sandboxes/{sandbox_id}/code/contexts", json=body, timeout=START_TIMEOUT)
    )


async def list_contexts(api: Api, sandbox_id: str) -> list[Context]:
    return [_context(c) for c in await api.request("GET", f"/sandboxes/{sandbox_id}/code/contexts")]


async def restart_context(api: Api, sandbox_id: str, context: Context | str) -> Context:
    context_id = context.id if isinstance(context, Context) else context
    return _context(
        await api.request(
            "POST", f"/sandboxes/{sandbox_id}/code/contexts/{context_id}/restart", timeout=START_TIMEOUT
        )
    )


async def remove_context(api: Api, sandbox_id: str, context: Context | str) -> None:
    context_id = context.id if isinstance(context, Context) else context
    await api.request("DELETE", f"/sandboxes/{sandbox_id}/code/contexts/{context_id}")

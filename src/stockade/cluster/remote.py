"""The replica's end of the stream channel: process output and file transfers, straight from the
owning host's stream endpoint (:mod:`.streams`) over HTTP, each request signed (:mod:`.tokens`).

What comes back is what the engine would return in-process: a process's events as dicts (bytes
in ``data``), a file as an iterator of byte chunks, an ``EntryInfo``; an error the host answers
is re-raised as the same engine error class.
"""

from __future__ import annotations

import base64
import json
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx

from ..engine import EngineError, SandboxUnavailable
from ..models import EntryInfo, ProcessSelector
from .router import ERRORS
from .streams import operation
from .tokens import HEADER, sign

OUTPUT = frozenset({"stdout", "stderr", "pty"})
#: Streams may be silent for long (the host sends keepalives); connecting must be quick.
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=10.0)


class Channel:
    """Signed HTTP requests to hosts' stream endpoints, over one connection pool."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=TIMEOUT)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def open(
        self,
        base_url: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: AsyncIterator[bytes] | None = None,
    ) -> httpx.Response:
        """Send a signed request; return the response with its body not yet read (raises
        the host's engine error for an error status)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._client.build_request(
            method, base_url + path, params=query, json=json_body, content=content
        )
        raw_path, _, raw_query = request.url.raw_path.decode("ascii").partition("?")
        request.headers[HEADER] = sign(self._secret, operation(method, raw_path, raw_query))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise SandboxUnavailable(f"could not reach the sandbox's host at {base_url}: {exc}") from None
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            raise _error(response.status_code, body)
        return response


def _error(status: int, body: bytes) -> EngineError:
    try:
        found = json.loads(body)
        code, message = str(found["code"]), str(found["message"])
    except (ValueError, KeyError, TypeError):
        return SandboxUnavailable(f"the sandbox's host answered {status}: {body[:200]!r}")
    if code == "unauthorized":  # the replica's secret is not the host's: an operator error
        return SandboxUnavailable(
            f"the sandbox's host refused this replica ({message}); give "
            f"every host and replica the same $STOCKADE_CLUSTER_SECRET"
        )
    return ERRORS.get(code, EngineError)(message)


class RemoteRun:
    """A process on another host, read like :class:`stockade.engine.ProcessRun`."""

    def __init__(
        self, response: httpx.Response, send_stdin: Callable[[ProcessSelector, bytes], Awaitable[None]]
    ) -> None:
        self._response = response
        self._send_stdin = send_stdin
        self.pid: int | None = None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        ended = False
        try:
            async for line in self._response.aiter_lines():
                if not line:
                    continue
                event: dict[str, Any] = json.loads(line)
                kind = event.get("type")
                if kind == "error" and "code" in event:
                    raise ERRORS.get(str(event["code"]), EngineError)(str(event["message"]))
                if kind in OUTPUT and isinstance(event.get("data"), str):
                    event["data"] = base64.b64decode(event["data"])
                elif kind == "start":
                    self.pid = event.get("pid")
                ended = ended or kind == "end"
                yield event
        except httpx.TransportError as exc:
            raise SandboxUnavailable(f"the stream from the sandbox's host broke: {exc}") from None
        finally:
            await self._response.aclose()
        if not ended:
            raise SandboxUnavailable(
                "the sandbox's host ended the stream before the process ended (the host may be down)"
            )

    async def send_stdin(self, data: bytes) -> None:
        await self._send_stdin(ProcessSelector(pid=self.pid), data)


async def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """A file's bytes as they arrive from the host."""
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.TransportError as exc:
        raise SandboxUnavailable(f"the download from the sandbox's host broke: {exc}") from None
    finally:
        await response.aclose()


async def entry(response: httpx.Response) -> EntryInfo:
    """The ``EntryInfo`` a finished upload answers."""
    try:
        return EntryInfo.model_validate_json(await response.aread())
    finally:
        await response.aclose()

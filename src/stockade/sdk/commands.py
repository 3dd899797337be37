"""Commands in a sandbox (async core; the sync twin wraps it)."""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import inspect
import json
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import httpx

from ..models import ProcessInfo
from . import exceptions as exc
from ._transport import Api, raise_for_error, translate_transport

log = logging.getLogger("stockade.sdk")
OutputCallback = Callable[[str], Any]


@dataclass
class CommandResult:
    """What a finished command left: its output, exit code and how it ended."""

    stdout: str
    stderr: str
    exit_code: int
    status: str = "exited"
    pid: int | None = None
    oom_killed: bool = False
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)
    error: str | None = None


class _Output:
    """Bytes of one stream, plus the text decoded so far and the caller's callback."""

    def __init__(self, callback: OutputCallback | None) -> None:
        self.chunks: list[bytes] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.callback = callback

    async def add(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.callback is not None:
            text = self.decoder.decode(data)
            if text:
                try:
                    outcome = self.callback(text)
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:  # noqa: BLE001 - a caller's callback must not break the stream
                    log.exception("output callback failed")

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class AsyncCommandHandle:
    """A command that is running: wait for it, feed it, kill it."""

    def __init__(
        self,
        api: Api,
        sandbox_id: str,
        response: httpx.Response,
        lines: AsyncIterator[str],
        first: dict[str, Any],
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        on_pty: Callable[[bytes], Any] | None = None,
    ) -> None:
        self._api = api
        self._sandbox_id = sandbox_id
        self._response = response
        self._lines = lines
        self.pid: int = int(first["pid"])
        self.tag: str | None = first.get("tag")
        self._stdout = _Output(on_stdout)
        self._stderr = _Output(on_stderr)
        self._on_pty = on_pty
        self._task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> CommandResult:
        end: dict[str, Any] = {}
        try:
            async for line in self._lines:
                if not line:
                    continue
                event = json.loads(line)
                kind = event.get("type")
                if kind in ("stdout", "stderr", "pty"):
                    data = base64.b64decode(event["data"])
                    if kind == "stdout":
                        await self._stdout.add(data)
                    elif kind == "stderr":
                        await self._stderr.add(data)
                    elif self._on_pty is not None:
                        self._on_pty(data)
                elif kind == "end":
                    end = event
                elif kind == "error":
                    raise exc.from_response(502, event)
        except httpx.TransportError as error:
            raise translate_transport(error) from None
        finally:
            await self._response.aclose()
        if not end:
            raise exc.SandboxUnavailable(
                502, "sandbox_unavailable", "the command's stream ended without an exit status"
            )
        out, err = self._stdout.data, self._stderr.data
        return CommandResult(
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            exit_code=int(end.get("exit_code") or 0),
            status=end.get("status", ""),
            pid=self.pid,
            oom_killed=bool(end.get("oom_killed")),
            stdout_bytes=out,
            stderr_bytes=err,
        )

    async def wait(self, check: bool = False, timeout: float | None = None) -> CommandResult:
        """Wait for the end; raise CommandTimeout if the sandbox killed it for running too long."""
        result = await asyncio.shield(self._task)
        if result.status == "timeout":
            raise exc.CommandTimeout(result, timeout)
        if check and result.exit_code != 0:
            raise exc.CommandExitError(result)
        return result

    async def send_stdin(self, data: str | bytes) -> None:
        await _send_stdin(self._api, self._sandbox_id, {"pid": self.pid}, data)

    async def close_stdin(self) -> None:
        await self._api.request(
            "POST", f"/sandboxes/{self._sandbox_id}/processes/stdin/close", json={"pid": self.pid}
        )

    async def kill(self) -> bool:
        """SIGKILL the command's process group; False if it had already ended."""
        return await _signal(self._api, self._sandbox_id, {"pid": self.pid}, "KILL")

    async def disconnect(self) -> None:
        """Stop following the output; the process goes on."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


async def _send_stdin(api: Api, sandbox_id: str, selector: dict[str, Any], data: str | bytes) -> None:
    payload = data.encode() if isinstance(data, str) else data
    await api.request("POST", f"/sandboxes/{sandbox_id}/processes/stdin", params=selector, content=payload)


async def _signal(api: Api, sandbox_id: str, selector: dict[str, Any], signal: str) -> bool:
    try:
        await api.request(
            "POST", f"/sandboxes/{sandbox_id}/processes/signal", json={**selector, "signal": signal}
        )
    except exc.NotFoundError:
        return False
    return True


class AsyncCommands:
    """``sandbox.commands``: run commands and manage running ones."""

    def __init__(self, api: Api, sandbox_id: str) -> None:
        self._api = api
        self._sandbox_id = sandbox_id

    async def _open(
        self,
        url: str,
        body: dict[str, Any],
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
        on_pty: Callable[[bytes], Any] | None = None,
    ) -> AsyncCommandHandle:
        client = self._api.client
        try:
            request = client.build_request("POST", url, json=body, timeout=httpx.Timeout(None, connect=10.0))
            response = await client.send(request, stream=True)
        except httpx.TransportError as error:
            raise translate_transport(error) from None
        if response.status_code >= 400:
            content = await response.aread()
            await response.aclose()
            raise_for_error(response, content)
        lines = response.aiter_lines()
        first = json.loads(await anext(lines))
        return AsyncCommandHandle(
            self._api, self._sandbox_id, response, lines, first, on_stdout, on_stderr, on_pty
        )

    async def run(
        self,
        cmd: str | list[str],
        *,
        background: bool = False,
        envs: dict[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        timeout: float | None = 60.0,
        stdin: bool = False,
        tag: str | None = None,
        check: bool = False,
        max_output: int | None = None,
    ) -> Any:
        """Run ``cmd`` (a shell string, or an argv list) as ``user`` (default ``user``).

        Without ``background`` it waits and returns a :class:`CommandResult`; with it, returns
        an :class:`AsyncCommandHandle` at once. ``timeout`` (seconds, None for none) kills the
        command when it runs too long (``CommandTimeout``); ``check=True`` raises
        ``CommandExitError`` on a non-zero exit. Output beyond ``max_output`` bytes (64 MiB by
        default) kills the command with status ``output_limit``.
        """
        body: dict[str, Any] = {"env": envs or {}, "stdin": stdin}
        body["argv" if isinstance(cmd, list) else "cmd"] = cmd
        for key, value in (
            ("user", user),
            ("cwd", cwd),
            ("timeout", timeout),
            ("tag", tag),
            ("max_output", max_output),
        ):
            if value is not None:
                body[key] = value
        handle = await self._open(f"/sandboxes/{self._sandbox_id}/processes", body, on_stdout, on_stderr)
        if background:
            return handle
        return await handle.wait(check=check, timeout=timeout)

    async def connect(
        self, pid: int, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
    ) -> AsyncCommandHandle:
        """Follow a running command's output from now on."""
        return await self._open(
            f"/sandboxes/{self._sandbox_id}/processes/connect", {"pid": pid}, on_stdout, on_stderr
        )

    async def list(self) -> list[ProcessInfo]:
        rows = await self._api.request("GET", f"/sandboxes/{self._sandbox_id}/processes")
        return [ProcessInfo.model_validate(row) for row in rows]

    async def kill(self, pid: int) -> bool:
        """SIGKILL a running command; False if there was none with that pid."""
        return await _signal(self._api, self._sandbox_id, {"pid": pid}, "KILL")

    async def send_stdin(self, pid: int, data: str | bytes) -> None:
        await _send_stdin(self._api, self._sandbox_id, {"pid": pid}, data)

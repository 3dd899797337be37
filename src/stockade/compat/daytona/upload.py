"""Multipart uploads streamed straight into the sandbox: each file part is written while it
arrives (nothing spooled on the server's disk), with back-pressure, and a body that ends before
its closing boundary is refused (an unfinished file is never renamed into place).

Daytona's client sends ``files[i].path`` (text) and ``files[i].file`` (bytes, filename = the
destination) for each file, text parts first; ``upload-v2`` sends one ``file`` part.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, AsyncIterator, Awaitable, Callable

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ._base import DaytonaError

#: Write one file: (path in the sandbox, its bytes) -> done.
Writer = Callable[[str, AsyncIterator[bytes]], Awaitable[Any]]
FIELD = re.compile(r"^files\[(\d{1,4})\]\.(path|file)$")
MAX_FILES = 1000
MAX_PATH = 4096
QUEUE = 8  # chunks buffered per file before the upload waits for the sandbox


class _Part:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.field = bytearray()
        self.value = bytearray()
        self.name = ""
        self.filename: str | None = None


async def _chunks(queue: "asyncio.Queue[bytes | None]") -> AsyncIterator[bytes]:
    while (chunk := await queue.get()) is not None:
        yield chunk


async def _put(task: "asyncio.Task[Any]", queue: "asyncio.Queue[bytes | None]", piece: bytes | None) -> None:
    """Hand ``piece`` to the file's writer, or raise the writer's error if it stopped."""
    putter = asyncio.ensure_future(queue.put(piece))
    done, _ = await asyncio.wait({putter, task}, return_when=asyncio.FIRST_COMPLETED)
    if putter not in done:
        putter.cancel()
        task.result()  # raises what stopped the writer
        raise DaytonaError(400, "a file part went on after its file was written")


async def stream_upload(
    request: Request, write: Writer, check: Callable[[str], str], single: str | None = None
) -> int:
    """Write every file of the multipart body with ``write`` (each destination first passed
    through ``check``); return how many. With ``single``, the body's one ``file`` part goes to
    that path."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise DaytonaError(400, "send the files as multipart/form-data with a boundary")
    paths: dict[int, str] = {}
    part = _Part()
    pending: list[tuple["asyncio.Task[Any]", "asyncio.Queue[bytes | None]", bytes | None]] = []
    writes: list[asyncio.Task[Any]] = []
    queue: asyncio.Queue[bytes | None] | None = None
    text: bytearray | None = None
    problems: list[str] = []

    def begin() -> None:
        nonlocal part, queue, text
        part, queue, text = _Part(), None, None

    def header_end() -> None:
        name = bytes(part.field).decode("latin-1").lower()
        part.headers[name] = bytes(part.value).decode("utf-8", "replace")
        part.field.clear()
        part.value.clear()

    def headers_done() -> None:
        nonlocal queue, text
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        match = FIELD.match(name)
        if single is not None and name == "file":
            destination: str | None = single
        elif match and match.group(2) == "path":
            text = bytearray()
            return
        elif match:
            destination = paths.get(int(match.group(1))) or (
                filename.decode("utf-8", "replace") if filename else None
            )
        else:
            problems.append(f"unexpected form field {name!r}; send files[i].path and files[i].file")
            return
        if destination is None:
            problems.append(f"{name} has no files[i].path before it and no filename")
            return
        if len(writes) >= MAX_FILES:
            problems.append(f"more than {MAX_FILES} files in one upload")
            return
        try:
            destination = check(destination)
        except DaytonaError as exc:
            problems.append(exc.message)
            return
        queue = asyncio.Queue(QUEUE)
        writes.append(asyncio.ensure_future(write(destination, _chunks(queue))))
        part.name = name

    def data(buffer: bytes, start: int, end: int) -> None:
        if text is not None:
            if len(text) + end - start > MAX_PATH:
                problems.append("a files[i].path is longer than 4096 bytes")
            else:
                text.extend(buffer[start:end])
        elif queue is not None and end > start:
            pending.append((writes[-1], queue, bytes(buffer[start:end])))

    def part_end() -> None:
        if text is not None:
            _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
            match = FIELD.match(disposition.get(b"name", b"").decode("utf-8", "replace"))
            if match:
                paths[int(match.group(1))] = text.decode("utf-8", "replace")
        elif queue is not None:
            pending.append((writes[-1], queue, None))

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": begin,
            "on_header_field": lambda b, s, e: part.field.extend(b[s:e]),
            "on_header_value": lambda b, s, e: part.value.extend(b[s:e]),
            "on_header_end": header_end,
            "on_part_data": data,
            "on_part_end": part_end,
            "on_headers_finished": headers_done,
        },
    )

    async def feed(chunk: bytes | None) -> None:
        try:
            if chunk is None:
                parser.finalize()
            else:
                parser.write(chunk)
        except ValueError as exc:  # the parser's own errors: not valid multipart
            raise DaytonaError(400, f"malformed multipart body: {exc}") from None
        if problems:
            raise DaytonaError(400, problems[0])
        for task, target, piece in pending:
            await _put(task, target, piece)
        pending.clear()

    try:
        try:
            async for chunk in request.stream():
                await feed(chunk)
        except ClientDisconnect:
            raise DaytonaError(400, "the upload ended before its last byte") from None
        await feed(None)
        if parser.state != MultipartState.END:
            raise DaytonaError(400, "malformed multipart body: it ends before its closing boundary")
        if not writes:
            raise DaytonaError(
                400,
                "no files in the upload; send files[i].path and files[i].file parts"
                if single is None
                else "send the file as the multipart part 'file'",
            )
        await asyncio.gather(*writes)
        return len(writes)
    finally:
        for task in writes:
            if not task.done():
                task.cancel()
        for task in writes:
            with contextlib.suppress(BaseException):
                await task

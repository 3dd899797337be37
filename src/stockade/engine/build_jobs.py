"""Template builds that run in the background and are polled (``engine.templates.start_build``).

The native API streams a build to the caller and cancels it when the caller leaves; protocols
that start a build and then poll its status (E2B's template build API) need it to outlive the
request. A job keeps its build's log lines and its end (ready or error) for ``KEEP`` seconds
after it ends. Build context files arrive beforehand, one tar per content hash and owner
(``save_file``), and are unpacked into a fresh context directory per build; a file no build
used for ``FILE_KEEP`` seconds is deleted.

Jobs live in the server process: a restart ends the builds in flight (their build sandboxes are
collected as orphans) and forgets their status; the templates already built stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from ..images.build_context import ContextError, unpack
from ..models import BuildLog, BuildStatus
from .errors import Conflict, EngineError, InvalidRequest, NotFound

if TYPE_CHECKING:
    from .engine import Engine

Visible = Callable[[str | None], bool]
#: How long a finished job still answers polls, and the most log lines one job keeps.
KEEP = 3600.0
MAX_LINES = 20000
#: Uploaded context files unused this long are deleted (a later build uploads them again).
FILE_KEEP = 7 * 86400.0
#: A context file's name: a hex content hash chosen by the client.
DIGEST = re.compile(r"^[0-9a-f]{16,128}$")
#: The most one context file may be, as uploaded.
MAX_FILE = 4 << 30


@dataclass
class Job:
    build_id: str
    template: str
    owner: str | None
    status: str = "building"
    logs: list[BuildLog] = field(default_factory=list)
    error: str | None = None
    ended: float | None = None
    task: "asyncio.Task[Any] | None" = None

    def log(self, message: str, level: str = "info") -> None:
        if len(self.logs) < MAX_LINES:
            self.logs.append(BuildLog(at=time.time(), level=level, message=message))

    def emit(self, event: dict[str, Any]) -> None:
        """One event of ``TemplateBuild.run`` as log lines."""
        if event.get("type") == "step":
            self.log(f"step {event['step']}/{event['total']} {event['status']}: {event['instruction'][:300]}")
        elif event.get("type") == "log":
            for line in str(event.get("data", "")).splitlines():
                self.log(line, "error" if event.get("stream") == "stderr" else "info")


def _digest(digest: str) -> str:
    if not DIGEST.fullmatch(digest):
        raise InvalidRequest(
            f"a build file's hash must be 16 to 128 lowercase hex digits, not {digest[:80]!r}"
        )
    return digest


class BuildJobs:
    """The background builds of one engine, by id."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine
        self._jobs: dict[str, Job] = {}

    def _files(self, owner: str | None) -> Path:
        path = self._engine.config.data_dir / "builds" / "files" / (owner or "_shared")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def has_file(self, owner: str | None, digest: str) -> bool:
        """Whether ``owner`` already uploaded the context file ``digest``."""
        return (self._files(owner) / _digest(digest)).is_file()

    async def save_file(self, owner: str | None, digest: str, chunks: AsyncIterator[bytes]) -> None:
        """Store one context file (a tar, any compression) of ``owner`` under ``digest``."""
        final = self._files(owner) / _digest(digest)
        part = final.with_name(f".{digest}.{secrets.token_hex(4)}")
        size = 0
        try:
            with open(part, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > MAX_FILE:
                        raise InvalidRequest(f"a build file may be {MAX_FILE >> 20} MiB at most")
                    await asyncio.to_thread(f.write, chunk)
            part.replace(final)
        finally:
            part.unlink(missing_ok=True)

    async def start(
        self,
        dockerfile: str,
        name: str,
        files: list[str],
        *,
        owner: str | None,
        visible: Visible,
        replace: bool,
        build_id: str | None = None,
        network: Any = "none",
    ) -> BuildStatus:
        """Check and start a build whose context holds each of ``files`` (digests of this
        owner's uploads) unpacked in a directory named after it; ``build_id`` may be chosen
        by the caller (a protocol that hands it out before the build starts)."""
        self._sweep()
        build_id = build_id or secrets.token_hex(8)
        if build_id in self._jobs:
            raise Conflict(f"build {build_id!r} was already started")
        work = self._engine.templates.workspace()
        try:
            context = work / "context"
            context.mkdir()
            for digest in dict.fromkeys(files):
                if not self.has_file(owner, digest):
                    raise InvalidRequest(f"build file {digest} was not uploaded")
                os.utime(self._files(owner) / digest)  # used: kept FILE_KEEP more
                (context / digest).mkdir()
                await asyncio.to_thread(unpack, self._files(owner) / digest, context / digest)
            job = Job(build_id, name, owner)
            build = self._engine.templates.build(
                dockerfile,
                name,
                context,
                owner=owner,
                visible=visible,
                emit=job.emit,
                network=network,
                replace=replace,
            )
        except ContextError as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise InvalidRequest(str(exc)) from None
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._jobs[job.build_id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, build.run(), work))
        return self.status(job.build_id, visible)

    async def _run(self, job: Job, building: Any, work: Path) -> None:
        try:
            info = await building
            job.log(f"template {info.name} is ready")
            job.status = "ready"
        except EngineError as exc:
            job.status, job.error = "error", exc.message
            job.log(exc.message, "error")
        except Exception as exc:  # noqa: BLE001 - a poll must learn the build ended
            job.status, job.error = "error", f"internal error ({type(exc).__name__})"
            job.log(job.error, "error")
        finally:
            job.ended = time.time()
            await asyncio.to_thread(shutil.rmtree, work, True)

    def status(self, build_id: str, visible: Visible, offset: int = 0) -> BuildStatus:
        """A build's state and its log lines from ``offset``; another owner's reads as missing."""
        job = self._jobs.get(build_id)
        if job is None or not (job.owner is None or visible(job.owner)):
            raise NotFound(
                f"no build {build_id!r} (builds are kept {int(KEEP)} s after they "
                f"end, and not across a server restart)"
            )
        return BuildStatus(
            build_id=job.build_id,
            template=job.template,
            owner=job.owner,
            status=job.status,
            logs=job.logs[max(offset, 0) :],
            error=job.error,
        )

    def _sweep(self) -> None:
        now = time.time()
        for build_id in [i for i, j in self._jobs.items() if j.ended and now - j.ended > KEEP]:
            del self._jobs[build_id]
        root = self._engine.config.data_dir / "builds" / "files"
        for path in root.glob("*/*") if root.is_dir() else ():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > FILE_KEEP:
                    path.unlink()

    async def close(self) -> None:
        """Cancel the builds in flight (at engine shutdown)."""
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(BaseException):
                    await job.task

"""Templates from a Dockerfile subset, built step by step in real container-tier sandboxes.

Each step that changes files (RUN, COPY, WORKDIR) runs in a fresh build sandbox made from the
layer below; the sandbox's writable layer is then saved as a hidden cache image whose name is a
hash of everything the result depends on: the layer below, the step as written, the files a
COPY copies, the ENV/WORKDIR/USER in force and the tenant. A later build that reaches the same
key reuses the layer instead of running the step, so an unchanged prefix is never rebuilt. ENV
and USER only change the configuration carried to later steps and to the template.

The template itself is an empty layer over the last step's, carrying the configuration (its
``env``, ``workdir`` and ``user`` apply to every process of its sandboxes) and its owner; it is
installed under its name only once every step has succeeded. A failed or cancelled build leaves
the cache layers of the steps that finished and nothing else: its build sandbox is killed and its
staging directories are swept.
"""

from __future__ import annotations


import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from weakref import WeakSet
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, TypeVar

from .. import host
from ..images.build_context import ContextError, CopyPlan, plan_copy
from ..images.dockerfile import DockerfileError, Step, expand, parse
from ..images.store import ImageError, ImageInfo, ImageStore, InvalidImageName, validate_name
from .errors import Conflict, EngineError, InvalidRequest, NotFound
from ..models import ProcessSpec, SandboxSpec, TemplateInfo
from .templates import template_info

if TYPE_CHECKING:
    from .engine import Engine

Emit = Callable[[dict[str, Any]], None]
MayUse = Callable[[ImageInfo], bool]
T = TypeVar("T")
#: The store refuses longer parent chains; each RUN/COPY/WORKDIR adds one layer.
MAX_LAYERS = 32
#: Builds running in this process: the layer each stands on must outlive a prune.
ACTIVE: "WeakSet[TemplateBuild]" = WeakSet()
#: In the image store: builds hold it shared, removals of cache layers exclusively, so that an
#: engine never removes a layer that a build of another engine on the same store is using.
BUILDS_LOCK = ".builds.lock"
#: How long a delete or prune waits for the running builds to end.
REMOVAL_WAIT = 120.0


@contextlib.asynccontextmanager
async def _no_build_running(store: ImageStore, doing: str) -> AsyncIterator[None]:
    """Wait until no build (of any engine on ``store``) runs, and keep new ones waiting."""
    fd = await host.acquire(store.root / BUILDS_LOCK, timeout=REMOVAL_WAIT)
    if fd is None:
        raise Conflict(
            f"cannot {doing}: template builds have been running for "
            f"{REMOVAL_WAIT:.0f} s; try again when they end"
        )
    try:
        yield
    finally:
        os.close(fd)


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Run by the image's python3 as root in the build sandbox: unpack one COPY's tar at its place.
EXTRACT = r"""
import os, sys, tarfile
archive, dest, single = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
with tarfile.open(archive) as tar:
    members = tar.getmembers()
    if single and not dest.endswith("/") and not os.path.isdir(dest):
        members[0].name = os.path.basename(dest)
        dest = os.path.dirname(dest) or "/"
    os.makedirs(dest, exist_ok=True)
    extra = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    tar.extractall(dest, members=members, numeric_owner=True, **extra)
os.unlink(archive)
"""


class BuildFailed(EngineError):
    """A step of the build failed (a RUN exited non-zero, a COPY source is missing, ...)."""

    code = "build_failed"
    status = 422


@dataclass
class BuildState:
    """What the steps so far have set up: the layer on top and the configuration."""

    parent: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None

    def config(self) -> dict[str, Any]:
        return {"env": dict(self.env), "workdir": self.workdir, "user": self.user}


def _identity(store: ImageStore, name: str) -> str:
    """What a cache key says about a layer: a cache layer's name is its content's hash; a
    template is named and dated, so rebuilding it invalidates what was built on it."""
    info = store.get(name)
    return name if info.hidden else f"{name}@{info.created.isoformat()}"


def _cache_key(store: ImageStore, state: BuildState, step: Step, owner: str | None, extra: str = "") -> str:
    blob = json.dumps(
        [
            _identity(store, state.parent),
            owner,
            step.instruction,
            step.args,
            step.exec_form,
            state.config(),
            extra,
        ]
    )
    return "cache-" + hashlib.sha256(blob.encode()).hexdigest()[:40]


async def _finish(coro: Awaitable[T]) -> T:
    """Run ``coro`` to its end even if we are cancelled meanwhile (then re-raise the cancel)."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


class TemplateBuild:
    """One build: ``await TemplateBuild(...).run()`` returns the template's JSON."""

    def __init__(
        self,
        engine: "Engine",
        dockerfile: str,
        name: str,
        context: Path | None,
        *,
        owner: str | None,
        may_use: MayUse,
        emit: Emit,
        network: Any = "none",
        step_timeout: float = 3600.0,
        replace: bool = False,
    ) -> None:
        self.engine, self.store = engine, engine.images
        self.dockerfile, self.name, self.context = dockerfile, name, context
        self.owner, self.may_use, self.emit = owner, may_use, emit
        self.network, self.step_timeout, self.replace = network, step_timeout, replace
        self.build_id = secrets.token_hex(6)
        self.state: BuildState | None = None

    def check(self) -> list[Step]:
        """Parse and check the Dockerfile and the name; raise the engine's errors."""
        try:
            validate_name(self.name)
            steps = parse(self.dockerfile)
        except (InvalidImageName, DockerfileError) as exc:
            raise InvalidRequest(str(exc)) from None
        if self.store.exists(self.name) and not (
            self.replace and self.store.get(self.name).owner == self.owner
        ):
            raise Conflict(
                f"a template named {self.name!r} already exists; delete it first or choose another name"
            )
        base = steps[0].args[0]
        if self.replace and base == self.name:
            raise InvalidRequest(f"template {self.name!r} cannot be rebuilt from itself")
        if not self.store.exists(base) or not self.may_use(info := self.store.get(base)) or info.hidden:
            raise InvalidRequest(
                f"Dockerfile line {steps[0].line}: no template {base!r}; see "
                f"`stockade image ls` (or GET /templates)"
            )
        if info.python is None:
            raise InvalidRequest(f"template {base!r} has no python3, which the sandbox agent needs")
        depth = len(self.store.layers(base)) + sum(s.layered for s in steps) + 1
        if depth > MAX_LAYERS:
            raise InvalidRequest(
                f"the build would stack {depth} layers; the most is {MAX_LAYERS}: join RUN steps with '&&'"
            )
        if any(s.instruction == "COPY" for s in steps) and self.context is None:
            raise InvalidRequest("the Dockerfile has COPY but no build context was given")
        return steps

    async def run(self) -> TemplateInfo:
        """Build; return the template. Emits, for each step, ``{"type":
        "step", "step", "total", "instruction", "status"}`` when it starts (status "started")
        and when it ends (status "built", "cached" or "configured", and ``cached``), and
        ``{"type": "log", "line", "stream", "data"}`` for what its RUN writes."""
        steps = self.check()
        base = self.store.get(steps[0].args[0])
        state = BuildState(
            parent=base.name,
            env=dict((base.config or {}).get("env") or {}),
            workdir=(base.config or {}).get("workdir"),
            user=(base.config or {}).get("user"),
        )
        self.state = state
        ACTIVE.add(self)
        held: int | None = None
        total = len(steps)
        self.emit(
            {
                "type": "step",
                "step": 1,
                "total": total,
                "instruction": steps[0].text,
                "status": "cached",
                "cached": True,
            }
        )
        try:
            held = await host.acquire(self.store.root / BUILDS_LOCK, shared=True)
            scratch = self.engine.config.data_dir / "builds"
            scratch.mkdir(mode=0o700, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="steps-", dir=scratch) as tmp:
                for index, step in enumerate(steps[1:], 2):
                    event = {"type": "step", "step": index, "total": total, "instruction": step.text}
                    self.emit({**event, "status": "started"})
                    cached = await self._step(step, state, Path(tmp))
                    status = "configured" if cached is None else "cached" if cached else "built"
                    self.emit({**event, "status": status, "cached": bool(cached)})
            if self.replace and self.store.exists(self.name):
                # This build holds the store's builds lock shared: waiting for the exclusive
                # one here would wait for itself.
                await delete_template(self.engine, self.name, lock_held=True)
            info = await asyncio.to_thread(self._install, state)
        finally:
            ACTIVE.discard(self)
            if held is not None:
                os.close(held)
        return template_info(info)

    async def _step(self, step: Step, state: BuildState, tmp: Path) -> bool | None:
        """Apply one step to ``state``; True if its layer came from the cache, None for a
        configuration-only step."""
        env = {"PATH": DEFAULT_PATH, **state.env}
        if step.instruction == "ENV":
            for key, value in zip(step.keys, step.args):
                state.env[key] = expand(value, {"PATH": DEFAULT_PATH, **state.env})
            return None
        if step.instruction == "USER":
            state.user = expand(step.args[0], env)
            return None
        copy: CopyPlan | None = None
        if step.instruction == "WORKDIR":
            state.workdir = posixpath.normpath(
                posixpath.join(state.workdir or "/", expand(step.args[0], env))
            )
        elif step.instruction == "COPY":  # hashed first; packed only if not in the cache
            copy = await self._plan_copy(step, None)
        key = _cache_key(self.store, state, step, self.owner, copy.digest if copy else "")
        if self.store.exists(key):
            state.parent = key
            return True
        if copy is not None:
            copy = await self._plan_copy(step, tmp / f"copy-{step.line}.tar")
        await self._run_in_sandbox(step, state, key, env, copy)
        state.parent = key
        return False

    async def _plan_copy(self, step: Step, archive: Path | None) -> CopyPlan:
        assert self.context is not None
        try:
            return await asyncio.to_thread(plan_copy, self.context, list(step.args[:-1]), archive)
        except (ContextError, OSError) as exc:
            raise BuildFailed(f"Dockerfile line {step.line}: {exc}") from None

    async def _run_in_sandbox(
        self, step: Step, state: BuildState, key: str, env: dict[str, str], copy: CopyPlan | None
    ) -> None:
        created = await self.engine.sandboxes.create(
            SandboxSpec(
                isolation="container",
                template=state.parent,
                timeout=self.step_timeout,
                metadata={"stockade.build": self.build_id, "stockade.template": self.name},
                network=self.network if step.instruction == "RUN" else None,
            )
        )
        sandbox_id = created.id
        try:
            if step.instruction == "RUN":
                await self._run(sandbox_id, step, state, env)
            elif copy is not None:
                await self._copy(sandbox_id, step, state, env, copy)
            else:
                await self._root(sandbox_id, ["mkdir", "-p", "--", state.workdir or "/"], step)
            await _finish(self._commit(sandbox_id, key, step, state))
        finally:
            await _finish(self.engine.kill(sandbox_id))

    async def _run(self, sandbox_id: str, step: Step, state: BuildState, env: dict[str, str]) -> None:
        spec = ProcessSpec(
            argv=list(step.args) if step.exec_form else None,
            cmd=None if step.exec_form else step.args[0],
            user=state.user or "root",
            cwd=state.workdir or "/",
            env={k: v for k, v in env.items() if k in state.env},
        )
        try:
            run = await self.engine.processes.start(sandbox_id, spec)
        except EngineError as exc:
            raise BuildFailed(f"Dockerfile line {step.line}: {exc.message}") from None
        code = await self._follow(run.events(), step)
        if code != 0:
            raise BuildFailed(
                f"Dockerfile line {step.line}: '{step.text[:200]}' failed with exit code {code}"
            )

    async def _follow(self, events: AsyncIterator[dict[str, Any]], step: Step) -> int | None:
        async for event in events:
            if event["type"] in ("stdout", "stderr"):
                self.emit(
                    {
                        "type": "log",
                        "line": step.line,
                        "stream": event["type"],
                        "data": event["data"].decode(errors="replace"),
                    }
                )
            elif event["type"] == "end":
                code = event.get("exit_code")
                return code if isinstance(code, int) else -1
        return None

    async def _root(self, sandbox_id: str, argv: list[str], step: Step) -> None:
        run = await self.engine.processes.start(sandbox_id, ProcessSpec(argv=argv, user="root", cwd="/"))
        if await self._follow(run.events(), step) != 0:
            raise BuildFailed(f"Dockerfile line {step.line}: '{step.text[:200]}' failed")

    async def _copy(
        self, sandbox_id: str, step: Step, state: BuildState, env: dict[str, str], copy: CopyPlan
    ) -> None:
        dest = expand(step.args[-1], env)
        if not dest.startswith("/"):
            dest = posixpath.join(state.workdir or "/", dest) + ("/" if dest.endswith("/") else "")
        inside = f"/.stockade-copy-{secrets.token_hex(6)}.tar"

        async def chunks() -> AsyncIterator[bytes]:
            with open(copy.archive, "rb") as f:
                while data := f.read(1 << 20):
                    yield data

        await self.engine.files.write(sandbox_id, inside, chunks(), user="root", mode=0o600)
        python = self.store.get(state.parent).python or "python3"
        await self._root(
            sandbox_id, [python, "-I", "-c", EXTRACT, inside, dest, "1" if copy.single_file else "0"], step
        )

    async def _commit(self, sandbox_id: str, key: str, step: Step, state: BuildState) -> None:
        record = self.engine.record(sandbox_id)
        driver = self.engine.drivers[record.tier]
        await driver.pause(record.spec)
        upper = record.directory / "disk" / "upper"
        await asyncio.to_thread(self._save_layer, upper, driver.layer_uid_base, key, step, state)

    def _save_layer(self, upper: Path, uid_base: int | None, key: str, step: Step, state: BuildState) -> None:
        with self.store.staging(key) as staging:
            if self.store.exists(key):  # another build made it meanwhile
                return
            rootfs = staging.path / "rootfs"
            result = subprocess.run(
                ["cp", "-a", "--reflink=auto", str(upper), str(rootfs)], capture_output=True, text=True
            )
            if result.returncode != 0:
                raise BuildFailed(f"cannot save the layer of line {step.line}: {result.stderr.strip()}")
            if uid_base:
                host.unshift_owners(rootfs, uid_base)
            self.store.install(
                key,
                staging,
                source=f"build step: {step.text[:200]}",
                parent=state.parent,
                owner=self.owner,
                config=state.config(),
                hidden=True,
            )

    def _install(self, state: BuildState) -> ImageInfo:
        with self.store.staging(self.name) as staging:
            if self.store.exists(self.name):
                raise Conflict(f"a template named {self.name!r} was made meanwhile")
            (staging.path / "rootfs").mkdir(mode=0o755)
            try:
                return self.store.install(
                    self.name,
                    staging,
                    source="Dockerfile",
                    parent=state.parent,
                    owner=self.owner,
                    config=state.config(),
                )
            except ImageError as exc:
                raise Conflict(f"cannot save template {self.name!r}: {exc}") from None


async def delete_template(engine: "Engine", name: str, *, lock_held: bool = False) -> None:
    """Remove template ``name`` and the build-cache layers made from it; Conflict while a
    sandbox (in any state) or another template uses it. ``lock_held``: the caller is a build
    replacing its template (it holds the store's builds lock shared)."""
    store = engine.images
    try:
        store.get(name)
    except ImageError:
        raise NotFound(f"no template {name!r}") from None
    used = {s.template: s.id for s in await engine.sandboxes.list()}
    used.update({b.state.parent: "being built" for b in ACTIVE if b.state})
    doomed = [name]
    for current in doomed:  # grows as we go: every descendant
        for child in store.children(current):
            if not store.get(child).hidden:
                raise Conflict(f"template {name!r} is the parent of template {child!r}; delete that first")
            doomed.append(child)
    for layer in doomed:
        if layer in used:
            raise Conflict(f"template {name!r} is used by sandbox {used[layer]}; kill it first")
    waiting = contextlib.nullcontext() if lock_held else _no_build_running(store, f"delete template {name!r}")
    async with waiting:
        for layer in reversed(doomed):
            await engine.pool.forget_template(layer)
            try:
                await asyncio.to_thread(store.remove, layer)
            except ImageError as exc:
                raise Conflict(f"cannot delete template {name!r}: {exc}") from None


async def prune_cache(engine: "Engine", owner: str | None, everyone: bool) -> list[str]:
    """Delete build-cache layers that no template and no sandbox uses (``owner``'s only,
    unless ``everyone``); returns their names."""
    store = engine.images
    used = {s.template for s in await engine.sandboxes.list()}
    removed: list[str] = []
    async with _no_build_running(store, "prune the build cache"):
        while True:
            images = store.list()
            parents = {i.parent for i in images}
            leaves = [
                i.name
                for i in images
                if i.hidden
                and i.name not in parents
                and not i.name.startswith("fork-")  # their engine's (fork.py)
                and i.name not in used
                and (everyone or i.owner == owner)
            ]
            if not leaves:
                return removed
            for name in leaves:
                with contextlib.suppress(ImageError):
                    await asyncio.to_thread(store.remove, name)
                    removed.append(name)
            if not any(n in removed for n in leaves):
                return removed

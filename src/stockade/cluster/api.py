"""An API replica of the cluster: HTTP in front of :class:`ClusterSandboxes` (docs/cluster.md).

Stateless: everything it knows is in PostgreSQL and Ray, so any number of replicas serve the
same cluster. This first step authenticates the shared admin key only; tenants, keys and the
rest of the native API move over in later steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, Any, AsyncIterator

import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ..engine import EngineError
from ..models import ProcessSpec, SandboxInfo, SandboxPage, SandboxSpec
from ..server import errors
from ..server.auth import same_secret
from .node import NAMESPACE
from .placement import PLACEMENT_WAIT, Placer
from .router import ClusterSandboxes
from .state import ClusterState

log = logging.getLogger("stockade.cluster")


class Unauthorized(EngineError):
    code = "unauthorized"
    status = 401


class Starting(EngineError):
    code = "unavailable"
    status = 503


async def service(request: Request) -> ClusterSandboxes:
    """The replica's sandboxes service, for a caller holding the cluster's admin key."""
    found: ClusterSandboxes | None = request.app.state.sandboxes
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not same_secret(token.strip(), request.app.state.admin_key):
        raise Unauthorized("send 'Authorization: Bearer <admin key>' (the cluster's "
                           "STOCKADE_ADMIN_KEY)")
    if found is None:
        raise Starting("the replica is starting (joining Ray, opening PostgreSQL)")
    return found


Service = Annotated[ClusterSandboxes, Depends(service)]


def create_app(cluster: str, database_url: str, admin_key: str,
               placement_wait: float = PLACEMENT_WAIT) -> FastAPI:
    """The replica's app: joins Ray and opens the state at startup, leaves both at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import ray

        await asyncio.to_thread(ray.init, address=cluster, namespace=NAMESPACE,
                                log_to_driver=False, logging_level=logging.WARNING)
        state = await asyncio.to_thread(ClusterState, database_url)
        service = ClusterSandboxes(ray, state, Placer(ray, placement_wait))
        await service.check_hosts()
        watcher = asyncio.create_task(service.watch())
        app.state.sandboxes = service
        try:
            yield
        finally:
            app.state.sandboxes = None
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            state.close()
            ray.shutdown()

    app = FastAPI(title="Stockade cluster", version="0.1.0", lifespan=lifespan)
    app.state.sandboxes = None
    app.state.admin_key = admin_key
    errors.install(app)


    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        if app.state.sandboxes is None:
            return JSONResponse({"status": "starting"}, 503)
        return JSONResponse({"status": "ready"})

    @app.post("/sandboxes", status_code=201, response_model=SandboxInfo)
    async def create_sandbox(body: SandboxSpec, sandboxes: Service,
                             response: Response) -> SandboxInfo:
        """Place a sandbox on a host with a free slot of its tier and start it there."""
        info, host = await sandboxes.create(body)
        response.headers["x-stockade-host"] = host
        return info

    @app.get("/sandboxes", response_model=SandboxPage)
    async def list_sandboxes(sandboxes: Service) -> SandboxPage:
        return SandboxPage(items=await sandboxes.list())

    @app.get("/sandboxes/{sandbox_id}", response_model=SandboxInfo)
    async def get_sandbox(sandbox_id: str, sandboxes: Service) -> SandboxInfo:
        """The sandbox from its host; ``state: "lost"`` while its host is down."""
        return await sandboxes.get(sandbox_id)

    @app.delete("/sandboxes/{sandbox_id}", status_code=204)
    async def kill_sandbox(sandbox_id: str, sandboxes: Service) -> Response:
        await sandboxes.kill(sandbox_id)
        return Response(status_code=204)

    @app.post("/sandboxes/{sandbox_id}/run")
    async def run_command(sandbox_id: str, body: ProcessSpec,
                          sandboxes: Service) -> dict[str, Any]:
        """Run a command to its end on the owning host; output collected (1 MiB each)."""
        result = await sandboxes.run(sandbox_id, body)
        return {"stdout": result.stdout, "stderr": result.stderr,
                "exit_code": result.exit_code, "status": result.status}

    @app.get("/cluster/hosts")
    async def hosts(sandboxes: Service) -> list[dict[str, Any]]:
        """Every host the cluster has seen, its state and the sandboxes placed on it."""
        placed = await sandboxes.placement()
        return [{"name": row.name, "node_id": row.node_id, "state": row.state,
                 "reason": row.reason, "sandboxes": placed.get(row.name, [])}
                for row in await sandboxes.db(sandboxes.state.hosts)]

    return app


def serve(cluster: str, database_url: str, admin_key: str, host: str, port: int,
          placement_wait: float = PLACEMENT_WAIT, log_level: str = "info") -> None:
    """Serve the replica until SIGINT/SIGTERM (creates wait ``placement_wait`` s for a slot)."""
    app = create_app(cluster, database_url, admin_key, placement_wait)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)

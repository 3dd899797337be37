"""An API replica of the cluster: the whole native server over a :class:`ClusterEngine`.

The app is :func:`stockade.server.app.create_app` itself (routes, ``ClusterControl`` for
tenants, keys, quotas and audit in PostgreSQL, the front ends), with the cluster's engine in
place of the host's, plus ``GET /cluster/hosts``. Stateless: everything it knows is in
PostgreSQL and Ray, so any number of replicas serve the same cluster.
"""

from __future__ import annotations

import hashlib
import hmac
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import uvicorn
from fastapi import FastAPI, Request

from ..engine import Engine, EngineConfig
from ..server import logs
from ..server.app import create_app as server_app
from ..server.deps import AdminDep
from ..server.settings import ServerSettings
from .control import ClusterControl
from .engine import ClusterEngine
from .placement import PLACEMENT_WAIT
from .router import ClusterSandboxes
from .state import HostRow


def create_app(
    settings: ServerSettings, cluster: str, secret: str, placement_wait: float = PLACEMENT_WAIT
) -> FastAPI:
    """The replica's app: joins Ray and opens the state at startup, leaves both at shutdown."""
    config = EngineConfig(data_dir=settings.data_dir)
    database_url = settings.database_url or ""

    def open_engine() -> AbstractAsyncContextManager[Engine]:
        # ClusterEngine has the Engine's service interface (sandboxes, processes, files, ...),
        # which is all that the routes and the control plane use.
        engine = ClusterEngine(config, cluster, database_url, secret, placement_wait)
        return cast(AbstractAsyncContextManager[Engine], engine)

    # Every replica signs and checks access tokens (port links, E2B envd and traffic tokens,
    # Daytona file-URL keys) with one secret, derived from the cluster's.
    access_secret = hmac.new(secret.encode(), b"stockade access tokens", hashlib.sha256).digest()
    app = server_app(
        config, settings=settings, open_engine=open_engine, plane=ClusterControl, access_secret=access_secret
    )

    def cluster_of(request: Request) -> ClusterSandboxes:
        found = cast(ClusterEngine, request.app.state.engine).cluster
        assert found is not None
        return found

    async def described(cluster: ClusterSandboxes, rows: list[HostRow]) -> list[dict[str, Any]]:
        placed = await cluster.placement()
        return [
            {
                "name": row.name,
                "node_id": row.node_id,
                "state": row.state,
                "reason": row.reason,
                "draining": bool(row.draining),
                "sandboxes": placed.get(row.name, []),
                "stream_url": cluster.stream_urls.get(row.name),
            }
            for row in rows
        ]

    @app.get("/cluster/hosts", tags=["cluster"])
    async def hosts(request: Request, _admin: AdminDep) -> list[dict[str, Any]]:
        """Every host the cluster has seen, its state, whether it is draining, and the
        sandboxes placed on it (admin)."""
        cluster = cluster_of(request)
        return await described(cluster, await cluster.db(cluster.state.hosts))

    @app.post("/cluster/hosts/{name}/drain", tags=["cluster"])
    async def drain(name: str, request: Request, _admin: AdminDep) -> dict[str, Any]:
        """Take no new sandboxes on host ``name``; its sandboxes run on (admin)."""
        cluster = cluster_of(request)
        return (await described(cluster, [await cluster.drain(name)]))[0]

    @app.post("/cluster/hosts/{name}/undrain", tags=["cluster"])
    async def undrain(name: str, request: Request, _admin: AdminDep) -> dict[str, Any]:
        """Let host ``name`` take new sandboxes again (admin)."""
        cluster = cluster_of(request)
        return (await described(cluster, [await cluster.drain(name, draining=False)]))[0]

    return app


def serve(
    settings: ServerSettings,
    cluster: str,
    secret: str,
    placement_wait: float = PLACEMENT_WAIT,
    log_level: str = "info",
) -> None:
    """Serve the replica until SIGINT/SIGTERM (creates wait ``placement_wait`` s for a slot)."""
    logs.configure(log_level)
    app = create_app(settings, cluster, secret, placement_wait)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )

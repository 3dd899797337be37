"""Prometheus metrics of one server, on its own registry (``GET /metrics``).

Only aggregates are exported (no tenant labels), so the endpoint needs no key.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..models import SandboxInfo

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10)


class Metrics:
    """Counters and histograms the server updates as it works."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sandboxes = Gauge(
            "stockade_sandboxes", "Sandboxes by state and isolation tier", ["state", "tier"], registry=r
        )
        self.create_seconds = Histogram(
            "stockade_sandbox_create_seconds",
            "Time to create a sandbox, from request to running",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.creates = Counter(
            "stockade_sandbox_creates", "Sandbox creates by outcome", ["tier", "outcome"], registry=r
        )
        self.commands = Counter("stockade_commands", "Processes started in sandboxes", registry=r)
        self.requests = Counter(
            "stockade_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "stockade_http_request_seconds",
            "Time to the response's first byte",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("stockade_errors", "Error responses by error code", ["code"], registry=r)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.request_seconds.labels(method=method, route=route).observe(seconds)
        if method == "POST" and route == "/sandboxes/{sandbox_id}/processes" and status == 200:
            self.commands.inc()

    def render(self, sandboxes: Iterable[SandboxInfo]) -> bytes:
        """The text exposition, with the sandbox gauge refreshed from ``sandboxes``."""
        self.sandboxes.clear()
        for sb in sandboxes:
            self.sandboxes.labels(state=sb.state, tier=sb.isolation).inc()
        return generate_latest(self.registry)

"""Prometheus metrics of one replica (requests, latency, scores and verdicts per probe).

Each ingress replica keeps its own registry; `GET /metrics` on one replica reports that replica, which is
what a Prometheus scraper of each pod expects. A pure ASGI middleware records status and latency per route
without the overhead of BaseHTTPMiddleware.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "probe_service_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "probe_service_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.updates = Counter(
            "probe_service_updates_scored",
            "Updates (or snapshots) scored",
            ["probe_id"],
            registry=self.registry,
        )
        self.verdicts = Counter(
            "probe_service_verdicts", "Verdicts", ["probe_id", "verdict"], registry=self.registry
        )
        self.scores = Histogram(
            "probe_service_score",
            "Probe probabilities",
            ["probe_id"],
            buckets=_SCORE_BUCKETS,
            registry=self.registry,
        )

    def observe_scores(self, probe_id: str, probabilities: np.ndarray, threshold: float) -> None:
        flagged = int((probabilities >= threshold).sum())
        self.updates.labels(probe_id).inc(len(probabilities))
        self.verdicts.labels(probe_id, "malicious").inc(flagged)
        self.verdicts.labels(probe_id, "benign").inc(len(probabilities) - flagged)
        histogram = self.scores.labels(probe_id)
        for p in probabilities[:256].tolist():  # a sample bounds the cost of huge batches
            histogram.observe(p)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HttpMetrics(Protocol):
    """What the middleware records into (the probe service's and the aggregator's metrics both have it)."""

    requests: Counter
    latency: Histogram


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)

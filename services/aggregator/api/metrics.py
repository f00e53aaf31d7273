"""Prometheus metrics of the aggregator: requests, submissions by outcome, rounds, scoring latency.

Requests are counted by the probe service's MetricsMiddleware (same `requests`/`latency` attributes). The
probe scorer is wrapped (`TimedScorer`) so scoring latency and failures are measured without the
service knowing about metrics; round outcomes (aggregated, skipped) are counted when a round closes.
"""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shared.probe_scorer import ProbeScorer

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0)


class AggregatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aggregator_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "aggregator_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.submissions = Counter(
            "aggregator_submissions",
            "Update submissions by outcome (accepted, duplicate, or the HTTP status of a refusal)",
            ["outcome"],
            registry=self.registry,
        )
        self.refused = Counter(
            "aggregator_refused_updates",
            "Submissions a server-side check refused (snapshot_mismatch, structure, norm_bound)",
            ["check"],
            registry=self.registry,
        )
        self.rounds = Counter(
            "aggregator_rounds",
            "Closed rounds by phase (aggregated, skipped)",
            ["phase"],
            registry=self.registry,
        )
        self.registrations = Counter(
            "aggregator_registrations", "Registrations by outcome", ["outcome"], registry=self.registry
        )
        self.scoring = Histogram(
            "aggregator_scoring_seconds",
            "Probe scoring call latency",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TimedScorer:
    """A ProbeScorer that records each call's latency and outcome."""

    def __init__(self, scorer: ProbeScorer, metrics: AggregatorMetrics) -> None:
        self.scorer, self.metrics = scorer, metrics

    async def score(self, probe_id: str, features: np.ndarray) -> np.ndarray:
        start, outcome = time.perf_counter(), "error"
        try:
            scores = await self.scorer.score(probe_id, features)
            outcome = "ok"
            return scores
        finally:
            self.metrics.scoring.labels(outcome).observe(time.perf_counter() - start)

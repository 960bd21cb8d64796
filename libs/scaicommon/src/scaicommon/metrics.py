"""Prometheus metrics of one service process (platform §12.2).

Each service gets its own registry so that several apps can live in one test process.
Labels never carry tenant, user, request or session ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServiceMetrics:
    """The metric families of §12.2, named ``<module>_…``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, module: str) -> None:
        self.module = module
        self.registry = CollectorRegistry()
        m, r = module, self.registry
        self.http_requests = Counter(
            f"{m}_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_duration = Histogram(
            f"{m}_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ws_active = Gauge(
            f"{m}_ws_sessions_active", "Open sessions", ["transport"], registry=r
        )
        self.ws_sessions = Counter(
            f"{m}_ws_sessions_total", "Finished sessions", ["transport", "close_code"], registry=r
        )
        self.dispatch = Counter(
            f"{m}_dispatch_total",
            "Backend dispatches",
            ["backend", "operation", "outcome"],
            registry=r,
        )
        self.dispatch_duration = Histogram(
            f"{m}_dispatch_duration_seconds",
            "Backend dispatch latency",
            ["backend", "operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.grpc_calls = Counter(
            f"{m}_grpc_client_calls_total", "gRPC client calls", ["rpc", "code"], registry=r
        )
        self.grpc_duration = Histogram(
            f"{m}_grpc_client_duration_seconds", "gRPC client latency", ["rpc"], registry=r
        )
        self.relay_requests = Counter(
            f"{m}_relay_requests_total", "Relay requests", ["endpoint", "status"], registry=r
        )
        self.nodes = Gauge(f"{m}_nodes", "Known nodes", ["health", "engine_kind"], registry=r)
        self.jobs = Counter(f"{m}_jobs_total", "Finished jobs", ["kind", "outcome"], registry=r)
        self.job_duration = Histogram(
            f"{m}_job_duration_seconds",
            "Job latency",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(f"{m}_queue_depth", "Queued jobs", ["queue"], registry=r)
        self.ratelimit_rejections = Counter(
            f"{m}_ratelimit_rejections_total", "Rate-limit rejections", ["level"], registry=r
        )
        self.ratelimit_unavailable = Counter(
            f"{m}_ratelimit_unavailable_total", "Limiter checks skipped: Redis down", registry=r
        )
        self.quota_rejections = Counter(
            f"{m}_quota_rejections_total",
            "Quota and budget rejections",
            ["unit", "kind"],
            registry=r,
        )
        self.auth_failures = Counter(
            f"{m}_auth_failures_total", "Failed authentications", ["reason"], registry=r
        )
        self.usage_units = Counter(
            f"{m}_usage_units_total", "Metered units", ["unit", "backend"], registry=r
        )

    def observe_dispatch(
        self, backend: str, operation: str, outcome: str, seconds: float | None = None
    ) -> None:
        """Count one backend dispatch; record its latency when it succeeded."""
        self.dispatch.labels(backend=backend, operation=operation, outcome=outcome).inc()
        if seconds is not None:
            self.dispatch_duration.labels(backend=backend, operation=operation).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)

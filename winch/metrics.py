"""WinchMetrics: what winch counts, served at /metrics on its own (loopback) listener.

For winch run as a node sidecar (kEdge's PR #130) as much as on a laptop: requests by route
and status, how long they took, the errors winch made itself by kind (an unreachable edge,
a credential that could not be had, a refusal), CONNECT tunnels by path, and reloads.
"""

from __future__ import annotations

from kedge.core.metrics import MetricsRegistry

__all__ = ["WinchMetrics"]


class WinchMetrics:
    def __init__(self, registry: MetricsRegistry) -> None:
        r = registry
        self.registry = registry
        self.requests = r.counter(
            "winch_requests_total",
            "Requests answered, by mapper route and status.",
            ("route", "code"),
        )
        self.request_duration = r.histogram(
            "winch_request_duration_seconds", "Request durations, by mapper route.", ("route",)
        )
        self.errors = r.counter(
            "winch_errors_total",
            "Requests winch answered with its own error (X-Winch-Error-Type), by kind.",
            ("kind",),
        )
        self.tunnels = r.counter(
            "winch_tunnels_total",
            "CONNECT tunnels, by path: edge (TLS through the edge), served (plain HTTP or "
            "gRPC inside, served by winch), direct (unmapped, `unmapped: direct`).",
            ("path",),
        )
        self.config_reloads = r.counter(
            "winch_config_reloads_total", "Config reload attempts, by result.", ("result",)
        )
        for result in ("success", "failure"):
            self.config_reloads.labels(result)

"""EdgeMetrics: the edge's own metrics, registered on a MetricsRegistry when constructed."""

from __future__ import annotations

from kedge.core.errors import all_error_kinds
from kedge.core.metrics import DURATION_BUCKETS, MetricsRegistry
from kedge.edge.balancing.endpoint_health import HealthHooks

__all__ = ["EdgeMetrics"]


class EdgeMetrics:
    """The edge's metrics, registered in `registry` when constructed.

    Attributes (metric name, labels, meaning):
      requests: kedge_requests_total{listener,route,backend,code}: requests answered, by
        the exact status code sent to the client ("200", "503"); route and backend are ""
        when the request failed before routing.
      request_duration: kedge_request_duration_seconds{route,backend}: histogram of the
        time from the request head being parsed to the last response byte being written.
      errors: kedge_errors_total{kind}: requests answered with an edge error, by the
        X-Kedge-Error-Type value (`KedgeError.kind`); every known kind starts at 0.
      connections_accepted: kedge_connections_accepted_total{listener}: client
        connections accepted (after the TCP accept, before any TLS handshake).
      connections_rejected: kedge_connections_rejected_total{listener}: client connections
        closed at once because `limits.max_connections` was reached.
      connections_active: kedge_connections_active{listener}: client connections open now.
      h2_floods: kedge_http2_connections_closed_total{listener,kind}: HTTP/2 client
        connections ended with GOAWAY for abuse (kind: ping-flood, rapid-reset,
        header-timeout, protocol-error, ...).
      upstream_connections_opened: kedge_upstream_connections_opened_total{backend}: new
        connections to a backend's endpoints (pooled reuse does not count).
      upstream_connect_failures: kedge_upstream_connect_failures_total{backend}: failed
        attempts to connect to an endpoint (refused, timeout, TLS failure).
      upstream_retries: kedge_upstream_retries_total{backend}: requests sent again to
        another endpoint after a retryable failure.
      backend_endpoints: kedge_backend_endpoints{backend}: ready endpoints per backend in
        the current endpoint set.
      endpoint_ejections: kedge_endpoint_ejections_total{backend}: endpoints ejected by
        outlier detection (consecutive 5xx or connect failures).
      healthy_endpoints: kedge_backend_healthy_endpoints{backend}: ready endpoints neither
        ejected nor failing active checks, read at scrape time (`health_hooks`).
      endpoint_in_flight, endpoint_latency, endpoint_available:
        kedge_endpoint_in_flight, kedge_endpoint_latency_ewma_seconds and
        kedge_endpoint_available {backend,endpoint,tier,cluster,zone}: per endpoint,
        computed at scrape time (the app sets their collectors).
      health_checks: kedge_health_checks_total{backend,result}: active health checks
        ended, result "success" or "failure" (a timeout is a failure).
      config_reloads: kedge_config_reloads_total{result}: reload attempts, result
        "success" or "failure" (both start at 0).
      tls_reloads: kedge_tls_reloads_total{listener,result}: a TLS listener's certificate,
        key, client CAs or CRLs rebuilt for new handshakes (files changed, or a reload),
        result "success" or "failure" (the old material keeps serving).
      config_generation: kedge_config_generation: generation number of the config in
        use; increases by one with every successful reload.
      auth_decisions: kedge_auth_decisions_total{route,verdict}: one per request that met
        the auth layer; verdict is anonymous, allow, unauthenticated, denied, misdirected
        (the SNI rule) or unavailable (no key set to check a token with).
      discovered_routes: kedge_discovered_routes: routes generated from Services now.
      discovery_problems: kedge_discovery_problems{kind}: Services skipped as invalid, or
        ports skipped because a route already serves their host and port (conflict).
      draining: kedge_draining: 1 while the edge drains before shutting down, else 0.
      request_bytes: kedge_request_bytes_total{direction}: body bytes proxied, "in" from
        clients and "out" to clients; `bytes_in` and `bytes_out` are its two children.
    """

    def __init__(self, registry: MetricsRegistry) -> None:
        r = registry
        self.requests = r.counter(
            "kedge_requests_total",
            "Requests answered, by listener, route, backend and exact status code.",
            ("listener", "route", "backend", "code"),
        )
        self.request_duration = r.histogram(
            "kedge_request_duration_seconds",
            "Time from request head parsed to last response byte written.",
            ("route", "backend"),
            DURATION_BUCKETS,
        )
        self.errors = r.counter(
            "kedge_errors_total", "Requests answered with an edge error, by kind.", ("kind",)
        )
        for kind in sorted(all_error_kinds()):
            self.errors.labels(kind)
        self.connections_accepted = r.counter(
            "kedge_connections_accepted_total", "Client connections accepted.", ("listener",)
        )
        self.connections_rejected = r.counter(
            "kedge_connections_rejected_total",
            "Client connections closed at once because limits.max_connections was reached.",
            ("listener",),
        )
        self.h2_floods = r.counter(
            "kedge_http2_connections_closed_total",
            "HTTP/2 client connections ended with GOAWAY for abuse or a protocol error.",
            ("listener", "kind"),
        )
        self.auth_decisions = r.counter(
            "kedge_auth_decisions_total",
            "Auth decisions by route and verdict (anonymous, allow, unauthenticated, denied, "
            "misdirected, unavailable).",
            ("route", "verdict"),
        )
        self.discovered_routes = r.gauge(
            "kedge_discovered_routes", "Routes generated from labelled Kubernetes Services."
        )
        self.discovery_problems = r.gauge(
            "kedge_discovery_problems",
            "Labelled Services (invalid) or ports (conflict) route discovery skipped.",
            ("kind",),
        )
        self.connections_active = r.gauge(
            "kedge_connections_active", "Client connections open now.", ("listener",)
        )
        self.upstream_connections_opened = r.counter(
            "kedge_upstream_connections_opened_total",
            "New connections opened to a backend's endpoints.",
            ("backend",),
        )
        self.upstream_connect_failures = r.counter(
            "kedge_upstream_connect_failures_total",
            "Failed attempts to connect to a backend's endpoints.",
            ("backend",),
        )
        self.upstream_retries = r.counter(
            "kedge_upstream_retries_total",
            "Requests retried on another endpoint of the backend.",
            ("backend",),
        )
        self.backend_endpoints = r.gauge(
            "kedge_backend_endpoints", "Ready endpoints per backend.", ("backend",)
        )
        self.endpoint_ejections = r.counter(
            "kedge_endpoint_ejections_total",
            "Endpoints ejected by outlier detection (consecutive 5xx or connect failures).",
            ("backend",),
        )
        self.healthy_endpoints = r.gauge(
            "kedge_backend_healthy_endpoints",
            "Ready endpoints per backend that are neither ejected nor failing active checks.",
            ("backend",),
        )
        # Per endpoint, computed at scrape time from the live backends (what /status shows):
        # series come and go with the endpoints.
        endpoint_labels = ("backend", "endpoint", "tier", "cluster", "zone")
        self.endpoint_in_flight = r.gauge(
            "kedge_endpoint_in_flight", "Requests in flight to an endpoint.", endpoint_labels
        )
        self.endpoint_latency = r.gauge(
            "kedge_endpoint_latency_ewma_seconds",
            "Peak-EWMA response-head latency estimate of an endpoint (what p2c_ewma uses).",
            endpoint_labels,
        )
        self.endpoint_available = r.gauge(
            "kedge_endpoint_available",
            "1 when an endpoint may be picked: neither ejected nor failing active checks.",
            endpoint_labels,
        )
        self.health_checks = r.counter(
            "kedge_health_checks_total",
            "Active health checks ended, by result (success, failure).",
            ("backend", "result"),
        )
        self.config_reloads = r.counter(
            "kedge_config_reloads_total", "Config reload attempts, by result.", ("result",)
        )
        self.tls_reloads = r.counter(
            "kedge_tls_reloads_total",
            "Listener TLS material rebuilt for new handshakes, by listener and result.",
            ("listener", "result"),
        )
        self.config_reloads.labels("success")
        self.config_reloads.labels("failure")
        self.config_generation = r.gauge(
            "kedge_config_generation", "Generation number of the config in use."
        )
        self.draining = r.gauge("kedge_draining", "1 while the edge is draining, else 0.")
        self.request_bytes = r.counter(
            "kedge_request_bytes_total",
            "Body bytes proxied: in from clients, out to clients.",
            ("direction",),
        )
        self.bytes_in = self.request_bytes.labels("in")
        self.bytes_out = self.request_bytes.labels("out")

    def health_hooks(self, backend: str) -> HealthHooks:
        """What a Backend named `backend` reports its endpoints' health to."""
        checks = {r: self.health_checks.labels(backend, r) for r in ("success", "failure")}
        return HealthHooks(
            ejected=self.endpoint_ejections.labels(backend).inc,
            checked=lambda result: checks[result].inc(),
            watch_available=self.healthy_endpoints.labels(backend).set_function,
        )

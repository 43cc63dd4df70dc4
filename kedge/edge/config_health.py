"""A backend's health keys: `health_check`, `outlier_detection` and `panic_threshold`."""

from __future__ import annotations

import re

from kedge.core.config_loading import Fields, Node, dataclass_keys
from kedge.edge.config import (
    BackendConfig,
    GrpcHealthCheck,
    HealthCheckConfig,
    HealthProbe,
    HttpHealthCheck,
    OutlierDetectionConfig,
    TcpHealthCheck,
    UpstreamProtocol,
)

__all__ = ["parse_backend_health"]

_PROBES = ("http", "grpc", "tcp")
_CHECK_KEYS = tuple(k for k in dataclass_keys(HealthCheckConfig) if k != "probe") + _PROBES
# An authority as sent in Host / :authority: a name or IP literal and an optional port.
_AUTHORITY = re.compile(r"[A-Za-z0-9._~\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_STATUS_CLASS = re.compile(r"[1-5]xx")


def parse_backend_health(
    f: Fields, base: BackendConfig, protocol: UpstreamProtocol
) -> tuple[HealthCheckConfig | None, OutlierDetectionConfig, int]:
    """(health_check, outlier_detection, panic_threshold) of the backend mapping `f`."""
    check = _health_check(n, protocol) if (n := f.get("health_check")) else base.health_check
    outlier = base.outlier_detection
    if (n := f.get("outlier_detection")) is not None:
        outlier = _outlier(n, outlier)
    panic = f.get_int("panic_threshold", base.panic_threshold, minimum=0, maximum=100)
    return check, outlier, panic


def _health_check(node: Node, protocol: UpstreamProtocol) -> HealthCheckConfig:
    f = node.as_mapping(_CHECK_KEYS)
    given = [k for k in _PROBES if k in f or f.is_null(k)]
    if len(given) != 1:
        problem = "no probe given" if not given else f"several probes given: {', '.join(given)}"
        raise node.error(
            f"{problem}; exactly one of http, grpc, tcp is needed",
            "e.g. `http: {path: /healthz}`, `grpc: {service: ''}` or `tcp: {}`",
        )
    kind = given[0]
    probe_node = node.child(kind)
    probe: HealthProbe
    if kind == "http":
        probe = _http(probe_node)
    elif kind == "grpc":
        if protocol is UpstreamProtocol.HTTP1:
            raise probe_node.error(
                "the gRPC health protocol needs HTTP/2, but the backend speaks HTTP/1.1",
                "set the backend's `protocol: h2c` (or `h2` with `tls`), or use an http check",
            )
        probe = _grpc(probe_node)
    else:
        if probe_node.value is not None:
            probe_node.as_mapping(())  # no keys: `tcp: {}`
        probe = TcpHealthCheck()
    d = HealthCheckConfig(probe)
    return HealthCheckConfig(
        probe=probe,
        interval=f.get_duration("interval", d.interval, allow_zero=False),
        timeout=f.get_duration("timeout", d.timeout, allow_zero=False),
        healthy_threshold=f.get_int("healthy_threshold", d.healthy_threshold, minimum=1),
        unhealthy_threshold=f.get_int("unhealthy_threshold", d.unhealthy_threshold, minimum=1),
    )


def _host(f: Fields) -> str | None:
    n = f.get("host")
    if n is None:
        return None
    host = n.as_str()
    if not _AUTHORITY.fullmatch(host):
        raise n.error(
            f"{host!r} is not a host name with an optional port",
            "e.g. `host: web.internal` or `host: web.internal:8080`",
        )
    return host


def _http(node: Node) -> HttpHealthCheck:
    d = HttpHealthCheck()
    if node.value is None:
        return d
    f = node.as_mapping(dataclass_keys(HttpHealthCheck))
    path = d.path
    if (n := f.get("path")) is not None:
        path = n.as_str()
        if not path.startswith("/") or not path.isascii() or not path.isprintable() or " " in path:
            raise n.error(f"{path!r} is not a request path", "e.g. `path: /healthz`")
    statuses = d.expected_statuses
    if (n := f.get("expected_statuses")) is not None:
        statuses = _statuses(n)
    return HttpHealthCheck(path=path, expected_statuses=statuses, host=_host(f))


def _statuses(node: Node) -> tuple[int, ...]:
    out: set[int] = set()
    for item in node.as_list(allow_empty=False):
        if isinstance(item.value, str) and _STATUS_CLASS.fullmatch(item.value):
            low = int(item.value[0]) * 100
            out.update(range(low, low + 100))
        elif isinstance(item.value, int) and not isinstance(item.value, bool):
            out.add(item.as_int(minimum=100, maximum=599))
        else:
            raise item.error(
                f"{item.value!r} is not a status code", 'write a code (200) or a class ("2xx")'
            )
    return tuple(sorted(out))


def _grpc(node: Node) -> GrpcHealthCheck:
    d = GrpcHealthCheck()
    if node.value is None:
        return d
    f = node.as_mapping(dataclass_keys(GrpcHealthCheck))
    return GrpcHealthCheck(service=f.get_str("service", d.service, allow_empty=True), host=_host(f))


def _outlier(node: Node, d: OutlierDetectionConfig) -> OutlierDetectionConfig:
    f = node.as_mapping(dataclass_keys(OutlierDetectionConfig))
    base = f.get_duration("base_ejection", d.base_ejection, allow_zero=False)
    longest = f.get_duration("max_ejection", max(d.max_ejection, base), allow_zero=False)
    if longest < base:
        raise node.child("max_ejection").error(
            f"max_ejection ({longest:g}s) is shorter than base_ejection ({base:g}s)",
            "make max_ejection >= base_ejection",
        )
    return OutlierDetectionConfig(
        enabled=f.get_bool("enabled", d.enabled),
        consecutive_failures=f.get_int("consecutive_failures", d.consecutive_failures, minimum=1),
        base_ejection=base,
        max_ejection=longest,
        max_ejected_percent=f.get_int(
            "max_ejected_percent", d.max_ejected_percent, minimum=0, maximum=100
        ),
    )

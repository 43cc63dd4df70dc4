"""Active health check state (HealthState thresholds), gRPC health framing, config parsing."""

from __future__ import annotations

import pytest

from kedge.core.errors import ConfigError
from kedge.edge.balancing.health import HealthState, HealthStatus
from kedge.edge.balancing.health_probes import (
    ProbeFailed,
    grpc_check_request,
    grpc_serving_status,
)
from kedge.edge.config import (
    GrpcHealthCheck,
    HealthCheckConfig,
    HttpHealthCheck,
    OutlierDetectionConfig,
    TcpHealthCheck,
)
from kedge.edge.config_parser import parse_edge_config

U, H, X = HealthStatus.UNKNOWN, HealthStatus.HEALTHY, HealthStatus.UNHEALTHY


def run(results: str, start: HealthState | None = None, hth: int = 2, uth: int = 3) -> list:
    """The status after each result ('+' pass, '-' failure)."""
    state = start or HealthState()
    out = []
    for r in results:
        state = state.observe(r == "+", hth, uth, None if r == "+" else "boom")
        out.append(state.status)
    return out


@pytest.mark.parametrize(
    ("results", "statuses"),
    [
        ("", []),
        ("+", [H]),  # the first check decides at once
        ("-", [X]),
        ("+--", [H, H, H]),
        ("+---", [H, H, H, X]),  # unhealthy_threshold 3
        ("+--+---", [H, H, H, H, H, H, X]),  # a pass resets the failure run
        ("-+", [X, X]),
        ("-++", [X, X, H]),  # healthy_threshold 2
        ("-+-++", [X, X, X, X, H]),  # a failure resets the pass run
        ("+---++", [H, H, H, X, X, H]),
    ],
)
def test_thresholds(results: str, statuses: list[HealthStatus]) -> None:
    assert run(results) == statuses


@pytest.mark.parametrize(
    ("hth", "uth", "results", "last"),
    [
        (1, 1, "+-", X),
        (1, 1, "-+", H),
        (5, 1, "-++++", X),
        (5, 1, "-+++++", H),
        (1, 10, "+" + "-" * 9, H),
    ],
)
def test_other_thresholds(hth: int, uth: int, results: str, last: HealthStatus) -> None:
    assert run(results, hth=hth, uth=uth)[-1] is last


def test_state_carries_runs_and_error() -> None:
    s = HealthState().observe(True, 2, 3).observe(False, 2, 3, "status 503")
    assert (s.status, s.successes, s.failures, s.last_error) == (H, 0, 1, "status 503")
    s = s.observe(True, 2, 3)
    assert (s.successes, s.failures, s.last_error) == (1, 0, None)
    assert HealthState().is_available and s.is_available
    assert not HealthState(X).is_available


# -- gRPC health messages (grpc/health/v1/health.proto) ------------------------------------


@pytest.mark.parametrize(
    ("service", "frame"),
    [
        ("", b"\x00\x00\x00\x00\x00"),
        ("a.B", b"\x00\x00\x00\x00\x05\x0a\x03a.B"),
    ],
)
def test_check_request_frame(service: str, frame: bytes) -> None:
    assert grpc_check_request(service) == frame


def test_check_request_long_service_name_uses_a_multibyte_length() -> None:
    frame = grpc_check_request("s" * 200)
    assert frame[5:8] == b"\x0a\xc8\x01" and len(frame) == 5 + 3 + 200


@pytest.mark.parametrize(
    ("message", "status"),
    [
        (b"", 0),  # proto3 default: UNKNOWN
        (b"\x08\x01", 1),  # SERVING
        (b"\x08\x02", 2),  # NOT_SERVING
        (b"\x08\x03", 3),  # SERVICE_UNKNOWN
        (b"\x12\x02hi\x08\x01", 1),  # an unknown length-delimited field is skipped
        (b"\x19" + b"\x00" * 8 + b"\x08\x01", 1),  # an unknown fixed64 field too
    ],
)
def test_serving_status(message: bytes, status: int) -> None:
    assert grpc_serving_status(b"\x00" + len(message).to_bytes(4, "big") + message) == status


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x01\x00\x00\x00\x02\x08\x01",
        b"\x00\x00\x00\x00\x01\x08",
        b"\x00\x00\x00\x00\x01\x0f",
    ],
)
def test_bad_responses_fail(body: bytes) -> None:
    with pytest.raises(ProbeFailed):
        grpc_serving_status(body)


# -- config ----------------------------------------------------------------------------------


def backend_yaml(extra: dict[str, object], protocol: str = "http1") -> dict[str, object]:
    backend: dict[str, object] = {
        "name": "b",
        "protocol": protocol,
        "resolver": {"static": {"endpoints": ["127.0.0.1:9000"]}},
        **extra,
    }
    return {"listeners": [{"address": "127.0.0.1:0"}], "backends": [backend]}


def parse(extra: dict[str, object], protocol: str = "http1"):  # type: ignore[no-untyped-def]
    return parse_edge_config(backend_yaml(extra, protocol), "t.yaml").backends[0]


def test_defaults() -> None:
    b = parse({})
    assert b.health_check is None
    assert b.outlier_detection == OutlierDetectionConfig(True, 5, 30.0, 300.0, 50)
    assert b.panic_threshold == 50


@pytest.mark.parametrize(
    ("check", "protocol", "expected"),
    [
        ({"tcp": {}}, "http1", HealthCheckConfig(TcpHealthCheck())),
        ({"tcp": None}, "http1", HealthCheckConfig(TcpHealthCheck())),
        ({"http": None}, "http1", HealthCheckConfig(HttpHealthCheck())),
        (
            {
                "http": {"path": "/ready?x=1", "expected_statuses": [204, "2xx"], "host": "a.test"},
                "interval": "2s",
                "timeout": "250ms",
                "healthy_threshold": 1,
                "unhealthy_threshold": 4,
            },
            "http1",
            HealthCheckConfig(
                HttpHealthCheck("/ready?x=1", tuple(range(200, 300)), "a.test"), 2.0, 0.25, 1, 4
            ),
        ),
        (
            {"grpc": {"service": "pkg.Svc", "host": "g.test:50051"}},
            "h2c",
            HealthCheckConfig(GrpcHealthCheck("pkg.Svc", "g.test:50051")),
        ),
    ],
)
def test_health_check_parses(
    check: dict[str, object], protocol: str, expected: HealthCheckConfig
) -> None:
    assert parse({"health_check": check}, protocol).health_check == expected


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        ({"health_check": {"interval": "1s"}}, "backends[0].health_check", "no probe"),
        ({"health_check": {"tcp": {}, "http": {}}}, "backends[0].health_check", "several"),
        ({"health_check": {"grpc": {}}}, "backends[0].health_check.grpc", "HTTP/2"),
        ({"health_check": {"tcp": {"port": 1}}}, "backends[0].health_check.tcp", "port"),
        ({"health_check": {"http": {"path": "healthz"}}}, "health_check.http.path", "path"),
        (
            {"health_check": {"http": {"expected_statuses": [99]}}},
            "health_check.http.expected_statuses[0]",
            "minimum",
        ),
        (
            {"health_check": {"http": {"expected_statuses": ["6xx"]}}},
            "health_check.http.expected_statuses[0]",
            "status code",
        ),
        ({"health_check": {"http": {"host": "a b"}}}, "health_check.http.host", "host"),
        ({"health_check": {"tcp": {}, "timeout": 0}}, "health_check.timeout", "greater"),
        ({"health_check": {"tcp": {}, "unhealthy_threshold": 0}}, "unhealthy_threshold", "min"),
        ({"outlier_detection": {"max_ejection": "10s"}}, "outlier_detection.max_ejection", "short"),
        ({"outlier_detection": {"max_ejected_percent": 101}}, "max_ejected_percent", "maximum"),
        ({"outlier_detection": {"consecutive": 3}}, "outlier_detection", "consecutive_failures"),
        ({"panic_threshold": -1}, "backends[0].panic_threshold", "minimum"),
    ],
)
def test_errors_name_the_key(extra: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(extra)
    assert path in info.value.key_path
    assert words in str(info.value)


def test_outlier_detection_keys() -> None:
    b = parse(
        {
            "outlier_detection": {
                "enabled": False,
                "consecutive_failures": 2,
                "base_ejection": "1s",
                "max_ejection": "4s",
                "max_ejected_percent": 100,
            },
            "panic_threshold": 0,
        }
    )
    assert b.outlier_detection == OutlierDetectionConfig(False, 2, 1.0, 4.0, 100)
    assert b.panic_threshold == 0
    # A base_ejection above the default cap raises the cap with it when none is given.
    assert (
        parse({"outlier_detection": {"base_ejection": "10m"}}).outlier_detection.max_ejection == 600
    )

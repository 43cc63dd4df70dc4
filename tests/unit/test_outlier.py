"""Passive outlier detection (kedge.edge.balancing.outlier) and the panic rule, on a fake clock."""

from __future__ import annotations

import pytest

from kedge.core.metrics import MetricsRegistry
from kedge.edge.balancing.endpoint_health import EndpointHealth, HealthHooks, panicking, usable
from kedge.edge.balancing.outlier import Outcome, OutlierDetector, ejection_time
from kedge.edge.config import Address, HealthCheckConfig, OutlierDetectionConfig, TcpHealthCheck
from kedge.edge.discovery.model import Endpoint
from kedge.edge.observability.edge_metrics import EdgeMetrics

S, E, G = Outcome.SUCCESS, Outcome.SERVER_ERROR, Outcome.GATEWAY_FAILURE
KEYS = [f"10.0.0.{i}:80" for i in range(1, 11)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def detector(
    n: int = 10, clock: Clock | None = None, **overrides: object
) -> tuple[OutlierDetector, Clock]:
    clock = clock or Clock()
    d = OutlierDetector(OutlierDetectionConfig(**overrides), clock)  # type: ignore[arg-type]
    d.set_endpoints(KEYS[:n])
    return d, clock


@pytest.mark.parametrize(
    ("outcomes", "ejected"),
    [
        ([E] * 5, True),
        ([G] * 5, True),
        ([E, G, E, G, E], True),  # 5xx and connect failures count together
        ([E] * 4, False),
        ([E] * 4 + [S] + [E] * 4, False),  # a success resets the run
        ([S] * 20, False),
        ([E] * 4 + [S] + [E] * 5, True),
    ],
)
def test_consecutive_failures_eject(outcomes: list[Outcome], ejected: bool) -> None:
    d, _ = detector()
    results = [d.record(KEYS[0], o) for o in outcomes]
    assert d.ejected(KEYS[0]) is ejected
    assert results[-1] is ejected  # record says when it ejected
    assert not d.ejected(KEYS[1])


@pytest.mark.parametrize(
    ("n", "seconds"),
    [(1, 30.0), (2, 60.0), (3, 120.0), (4, 240.0), (5, 300.0), (50, 300.0), (10_000, 300.0)],
)
def test_ejection_time_doubles_up_to_the_cap(n: int, seconds: float) -> None:
    assert ejection_time(OutlierDetectionConfig(), n) == seconds


def eject(d: OutlierDetector, key: str, times: int = 5) -> bool:
    return [d.record(key, E) for _ in range(times)][-1]


def test_ejection_lasts_its_time_then_the_endpoint_returns() -> None:
    d, clock = detector()
    assert eject(d, KEYS[0])
    clock.now += 29.9
    assert d.ejected(KEYS[0])
    assert d.remaining(KEYS[0]) == pytest.approx(0.1)
    clock.now += 0.1
    assert not d.ejected(KEYS[0])
    assert d.remaining(KEYS[0]) == 0.0
    # Back with a clean run: four failures do not eject it again.
    assert not eject(d, KEYS[0], 4)


def test_repeated_ejections_grow_exponentially_and_cap() -> None:
    d, clock = detector()
    lengths = []
    for _ in range(6):
        assert eject(d, KEYS[0])
        lengths.append(d.remaining(KEYS[0]))
        clock.now += d.remaining(KEYS[0])  # returns, and fails again at once
        assert not d.ejected(KEYS[0])
    assert lengths == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]


@pytest.mark.parametrize(
    ("healthy_for", "next_length"),
    [
        (0.0, 120.0),  # third ejection: 30 * 2^2
        (29.0, 120.0),
        (30.0, 60.0),  # one base_ejection healthy: n decays by one
        (60.0, 30.0),
        (1000.0, 30.0),  # forgotten entirely
    ],
)
def test_multiplier_decays_while_healthy(healthy_for: float, next_length: float) -> None:
    d, clock = detector()
    for _ in range(2):
        eject(d, KEYS[0])
        clock.now += d.remaining(KEYS[0])
        d.ejected(KEYS[0])
    clock.now += healthy_for
    assert eject(d, KEYS[0])
    assert d.remaining(KEYS[0]) == next_length


@pytest.mark.parametrize(
    ("endpoints", "percent", "max_ejected"),
    [
        (10, 50, 5),
        (3, 50, 1),  # rounded down
        (2, 50, 1),
        (1, 50, 0),  # one endpoint of one is never ejected
        (4, 100, 4),
        (4, 0, 0),
        (10, 10, 1),
    ],
)
def test_at_most_max_ejected_percent(endpoints: int, percent: int, max_ejected: int) -> None:
    d, _ = detector(endpoints, max_ejected_percent=percent)
    ejected = [eject(d, k) for k in KEYS[:endpoints]]
    assert sum(ejected) == max_ejected == d.ejected_count()
    assert ejected == [True] * max_ejected + [False] * (endpoints - max_ejected)


def test_cap_frees_up_when_an_ejection_ends() -> None:
    d, clock = detector(2)
    assert eject(d, KEYS[0])
    assert not eject(d, KEYS[1])  # 1 of 2 already out
    clock.now += 30.0
    # Its run of failures went on meanwhile: the next failure ejects it.
    assert d.record(KEYS[1], E)


def test_outcomes_while_ejected_are_ignored() -> None:
    d, clock = detector()
    eject(d, KEYS[0])
    for outcome in [S, E, G] * 10:
        assert not d.record(KEYS[0], outcome)
    assert d.remaining(KEYS[0]) == 30.0  # neither extended nor ended
    clock.now += 30.0
    assert not d.ejected(KEYS[0])


def test_disabled_never_ejects() -> None:
    d, _ = detector(enabled=False)
    assert not eject(d, KEYS[0], 100)


def test_unknown_and_removed_keys() -> None:
    d, _ = detector(4)
    assert not eject(d, "10.9.9.9:80")
    d.record(KEYS[0], E)
    d.record(KEYS[0], E)
    d.set_endpoints(KEYS[:3])  # KEYS[0] stays: its run of failures too
    assert d.state(KEYS[0]) is not None and d.state(KEYS[0]).failures == 2  # type: ignore[union-attr]
    assert eject(d, KEYS[0], 3)
    d.set_endpoints(KEYS[1:3])  # removed while ejected: gone with its state
    assert not d.ejected(KEYS[0]) and d.state(KEYS[0]) is None
    assert d.ejected_count() == 0


def test_uneject_ends_an_ejection_early() -> None:
    d, clock = detector()
    eject(d, KEYS[0])
    clock.now += 1
    d.uneject(KEYS[0])
    assert not d.ejected(KEYS[0])
    assert d.multiplier(KEYS[0]) == 1  # the incident still counts for the next one


# -- panic mode ----------------------------------------------------------------------------


def eps(n: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(Address(f"10.0.0.{i}", 80)) for i in range(1, n + 1))


@pytest.mark.parametrize(
    ("total", "bad", "threshold", "expected", "panic"),
    [
        (4, 0, 50, 4, False),
        (4, 1, 50, 3, False),
        (4, 2, 50, 2, False),  # exactly 50% available: not below the threshold
        (4, 3, 50, 4, True),  # 25% < 50%: all endpoints
        (4, 4, 50, 4, True),
        (4, 4, 0, 0, False),  # panic off: none usable
        (4, 3, 0, 1, False),
        (10, 3, 70, 7, False),  # exactly 70%
        (10, 4, 70, 10, True),
        (10, 3, 60, 7, False),
        (10, 1, 100, 10, True),
        (0, 0, 50, 0, False),
    ],
)
def test_usable_and_panic(total: int, bad: int, threshold: int, expected: int, panic: bool) -> None:
    endpoints = eps(total)
    bad_keys = {e.key for e in endpoints[:bad]}

    def available(key: str) -> bool:
        return key not in bad_keys

    chosen = usable(endpoints, available, threshold)
    assert len(chosen) == expected
    assert panicking(endpoints, available, threshold) is panic
    if not panic:
        assert not bad_keys & {e.key for e in chosen}


def test_endpoint_health_combines_ejection_and_active_checks() -> None:
    clock = Clock()
    ejections: list[None] = []
    checks: list[str] = []
    gauge: list[object] = []
    health = EndpointHealth(
        OutlierDetectionConfig(),
        HealthCheckConfig(TcpHealthCheck(), healthy_threshold=2, unhealthy_threshold=3),
        clock=clock,
        hooks=HealthHooks(
            ejected=lambda: ejections.append(None),
            checked=checks.append,
            watch_available=gauge.append,
        ),
    )
    endpoints = eps(4)
    health.set_endpoints(endpoints)
    (count,) = gauge
    a, b, c, _ = (e.key for e in endpoints)
    assert health.all_available() and count() == 4  # type: ignore[operator]
    for _ in range(5):
        health.record(a, E)
    health.checked(b, False, "connection refused")  # unknown -> unhealthy at once
    assert len(ejections) == 1 and checks == ["failure"]
    assert not health.available(a) and not health.available(b) and health.available(c)
    assert count() == 2  # type: ignore[operator]
    assert [e.key for e in health.usable(endpoints)] == [c, endpoints[3].key]
    assert not health.panic()
    health.checked(c, False)
    assert health.panic() and health.usable(endpoints) == endpoints
    st = health.status(b)
    assert st["health"] == "unhealthy" and st["last_check_error"] == "connection refused"
    assert health.status(a)["ejected"] is True and health.status(a)["ejected_for_s"] == 30.0
    # An ejected endpoint whose active check recovers (unhealthy -> healthy) returns early.
    for _ in range(3):
        health.checked(a, False)
    health.checked(a, True)
    assert not health.available(a)  # one pass of two needed
    health.checked(a, True)
    assert health.available(a) and health.status(a)["ejected"] is False


def test_endpoint_health_without_active_checks() -> None:
    health = EndpointHealth(OutlierDetectionConfig(), None, clock=Clock())
    health.set_endpoints(eps(2))
    key = eps(1)[0].key
    health.checked(key, False)  # ignored: no health_check configured
    assert health.available(key)
    assert health.status(key)["health"] == "unchecked"


def test_metrics_hooks_export_ejections_checks_and_available_endpoints() -> None:
    registry = MetricsRegistry()
    health = EndpointHealth(
        OutlierDetectionConfig(consecutive_failures=1),
        HealthCheckConfig(TcpHealthCheck()),
        clock=Clock(),
        hooks=EdgeMetrics(registry).health_hooks("app"),
    )
    a, b = (e.key for e in eps(2))
    health.set_endpoints(eps(2))
    health.record(a, E)
    health.checked(b, True)
    health.checked(b, False)  # 1 failure of 3: still healthy
    text = registry.render().decode()
    assert 'kedge_endpoint_ejections_total{backend="app"} 1\n' in text
    assert 'kedge_health_checks_total{backend="app",result="success"} 1\n' in text
    assert 'kedge_health_checks_total{backend="app",result="failure"} 1\n' in text
    assert 'kedge_backend_healthy_endpoints{backend="app"} 1\n' in text


def test_generation_changes_with_availability() -> None:
    clock = Clock()
    health = EndpointHealth(
        OutlierDetectionConfig(consecutive_failures=1),
        HealthCheckConfig(TcpHealthCheck()),
        clock=clock,
    )
    health.set_endpoints(eps(4))
    a, b, _, _ = (e.key for e in eps(4))
    steps = []
    g = health.generation()
    for step in ("pass", "eject", "fail", "fail-again", "read", "expire"):
        if step == "pass":
            health.checked(b, True)  # unknown -> healthy: still available
        elif step == "eject":
            health.record(a, E)
        elif step in ("fail", "fail-again"):
            health.checked(b, False)  # healthy: 1 then 2 failures of 3, still available
        elif step == "expire":
            clock.now += 30.0
        steps.append(health.generation() != g)
        g = health.generation()
    assert steps == [False, True, False, False, False, True]

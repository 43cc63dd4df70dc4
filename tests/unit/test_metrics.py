"""Tests for the metrics registry: exposition format 0.0.4, escaping, naming rules, EdgeMetrics."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kedge.core.errors import all_error_kinds
from kedge.core.metrics import DURATION_BUCKETS, MetricsRegistry
from kedge.edge.observability.edge_metrics import EdgeMetrics

# A sample line of the text format: name, optional {labels}, one space, value.
_SAMPLE_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z")
_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(,|\Z)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _PAIR_RE.match(text, pos)
        assert m, f"bad label syntax at {text[pos:]!r}"
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def _samples(exposition: bytes) -> list[tuple[str, dict[str, str], str]]:
    """Parse an exposition strictly, checking the comment lines and the final newline."""
    text = exposition.decode()
    assert text == "" or text.endswith("\n")
    out = []
    # The format separates lines with "\n" only; str.splitlines would also split on "\r".
    for line in text.split("\n")[:-1]:
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) kedge_[a-z0-9_]+ ", line), line
            continue
        m = _SAMPLE_RE.match(line)
        assert m, line
        out.append((m.group(1), _parse_labels(m.group(2) or ""), m.group(3)))
    return out


def test_exposition_line_by_line() -> None:
    r = MetricsRegistry()
    c = r.counter("kedge_things_total", "Things seen.", ("kind", "zone"))
    c.labels("b", "z1").inc(2)
    c.labels("a", "z2").inc()
    g = r.gauge("kedge_level", "A level.\nSecond line \\ end.")
    g.set(2.5)
    h = r.histogram("kedge_wait_seconds", "Waits.", ("route",), buckets=(0.1, 1.0))
    h.labels("r").observe(0.05)
    h.labels("r").observe(0.1)
    h.labels("r").observe(3)
    assert r.render().decode().splitlines() == [
        "# HELP kedge_things_total Things seen.",
        "# TYPE kedge_things_total counter",
        'kedge_things_total{kind="a",zone="z2"} 1',
        'kedge_things_total{kind="b",zone="z1"} 2',
        "# HELP kedge_level A level.\\nSecond line \\\\ end.",
        "# TYPE kedge_level gauge",
        "kedge_level 2.5",
        "# HELP kedge_wait_seconds Waits.",
        "# TYPE kedge_wait_seconds histogram",
        'kedge_wait_seconds_bucket{route="r",le="0.1"} 2',
        'kedge_wait_seconds_bucket{route="r",le="1"} 2',
        'kedge_wait_seconds_bucket{route="r",le="+Inf"} 3',
        'kedge_wait_seconds_sum{route="r"} 3.15',
        'kedge_wait_seconds_count{route="r"} 3',
    ]


def test_unlabelled_histogram_and_empty_families() -> None:
    r = MetricsRegistry()
    r.counter("kedge_unused_total", "Never used.", ("x",))
    h = r.histogram("kedge_op_seconds", "Ops.", (), buckets=(1.0,))
    h.observe(2.0)
    assert r.render().decode().splitlines() == [
        "# HELP kedge_unused_total Never used.",
        "# TYPE kedge_unused_total counter",
        "# HELP kedge_op_seconds Ops.",
        "# TYPE kedge_op_seconds histogram",
        'kedge_op_seconds_bucket{le="1"} 0',
        'kedge_op_seconds_bucket{le="+Inf"} 1',
        "kedge_op_seconds_sum 2",
        "kedge_op_seconds_count 1",
    ]


def test_empty_registry_renders_nothing() -> None:
    assert MetricsRegistry().render() == b""


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("plain", 'v="plain"'),
        ("back\\slash", 'v="back\\\\slash"'),
        ('say "hi"', 'v="say \\"hi\\""'),
        ("two\nlines", 'v="two\\nlines"'),
        ('\\"\n', 'v="\\\\\\"\\n"'),
        ("tab\tand é", 'v="tab\tand é"'),
        ("", 'v=""'),
        ("lone \udc80 surrogate", 'v="lone ? surrogate"'),  # replaced, scrape still works
    ],
)
def test_label_value_escaping(value: str, rendered: str) -> None:
    r = MetricsRegistry()
    r.counter("kedge_x_total", "x", ("v",)).labels(value).inc()
    assert r.render().decode().splitlines()[2] == f"kedge_x_total{{{rendered}}} 1"


@given(st.lists(st.text(), min_size=1, max_size=5, unique=True))
def test_any_label_value_round_trips(values: list[str]) -> None:
    r = MetricsRegistry()
    c = r.counter("kedge_x_total", "x", ("v",))
    for v in values:
        c.labels(v).inc()
    parsed = {labels["v"] for _, labels, _ in _samples(r.render())}
    assert parsed == set(values)


@pytest.mark.parametrize(
    ("kind", "name", "labelnames"),
    [
        ("counter", "requests_total", ()),  # no kedge_ prefix
        ("counter", "kedge_requests", ()),  # counter without _total
        ("counter", "kedge_Requests_total", ()),  # not lower snake case
        ("counter", "kedge-requests_total", ()),
        ("counter", "kedge_", ()),
        ("gauge", "kedge_open_total", ()),  # _total is for counters
        ("gauge", "kedge_request_duration_ms", ()),  # durations in seconds
        ("histogram", "kedge_request_latency", ()),  # time without a unit
        ("histogram", "kedge_request_duration_milliseconds", ()),
        ("counter", "kedge_cpu_time_total", ()),
        ("histogram", "kedge_wait_seconds_count", ()),  # clashes with the derived series
        ("histogram", "kedge_wait_seconds", ("le",)),  # le is reserved
        ("counter", "kedge_x_total", ("__reserved",)),
        ("counter", "kedge_x_total", ("bad-label",)),
        ("counter", "kedge_x_total", ("a", "a")),
        ("counter", "kedge_x_total", "route"),  # a string, not a sequence of names
    ],
)
def test_naming_rules_rejected(kind: str, name: str, labelnames: tuple[str, ...]) -> None:
    r = MetricsRegistry()
    with pytest.raises(ValueError):
        getattr(r, kind)(name, "help", labelnames)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("counter", "kedge_requests_total"),
        ("counter", "kedge_cpu_seconds_total"),
        ("gauge", "kedge_start_time_seconds"),
        ("gauge", "kedge_draining"),
        ("histogram", "kedge_request_duration_seconds"),
        ("histogram", "kedge_response_size_bytes"),
    ],
)
def test_naming_rules_accepted(kind: str, name: str) -> None:
    getattr(MetricsRegistry(), kind)(name, "help", ())


def test_duplicate_and_clashing_names_rejected() -> None:
    r = MetricsRegistry()
    r.counter("kedge_a_total", "a")
    with pytest.raises(ValueError):
        r.counter("kedge_a_total", "again")
    r.histogram("kedge_b_seconds", "b", buckets=(1.0,))
    with pytest.raises(ValueError):
        r.gauge("kedge_b_seconds_count", "clash with the histogram's _count")


@pytest.mark.parametrize(
    "buckets", [(), (1.0, 1.0), (2.0, 1.0), (float("nan"),), (float("-inf"), 1.0)]
)
def test_bad_buckets_rejected(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        MetricsRegistry().histogram("kedge_x_seconds", "x", (), buckets)


def test_explicit_inf_bucket_is_folded_into_the_implicit_one() -> None:
    h = MetricsRegistry().histogram("kedge_x_seconds", "x", (), (1.0, math.inf))
    assert h.buckets == (1.0,)


def test_labels_caches_children_and_checks_arity() -> None:
    c = MetricsRegistry().counter("kedge_x_total", "x", ("a", "b"))
    assert c.labels("1", "2") is c.labels("1", "2")
    assert c.labels("1", "2") is not c.labels("2", "1")
    with pytest.raises(ValueError):
        c.labels("only-one")
    with pytest.raises(TypeError):
        c.labels("1", 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        c.inc()  # a labelled metric has no parent series


def test_counter_only_goes_up() -> None:
    child = MetricsRegistry().counter("kedge_x_total", "x", ("a",)).labels("a")
    child.inc()
    child.inc(2.5)
    assert child.value == 3.5
    with pytest.raises(ValueError):
        child.inc(-1)
    assert child.value == 3.5


def test_gauge_set_inc_dec_and_function() -> None:
    r = MetricsRegistry()
    g = r.gauge("kedge_g", "g", ("k",))
    a = g.labels("a")
    a.set(10)
    a.inc()
    a.dec(3)
    assert a.value == 8
    calls: list[int] = []

    def read() -> float:
        calls.append(1)
        return 42.0

    g.labels("fn").set_function(read)
    g.labels("broken").set_function(lambda: 1 / 0)
    assert calls == []  # read only at scrape time
    samples = {labels["k"]: value for _, labels, value in _samples(r.render())}
    assert samples == {"a": "8", "fn": "42", "broken": "NaN"}
    assert calls == [1]


def test_unlabelled_gauge_delegates_and_renders_zero_before_use() -> None:
    r = MetricsRegistry()
    g = r.gauge("kedge_g", "g")
    assert r.render().decode().splitlines()[2] == "kedge_g 0"
    g.set(5)
    g.inc(2)
    g.dec()
    assert r.render().decode().splitlines()[2] == "kedge_g 6"
    g.set_function(lambda: 0.25)
    assert r.render().decode().splitlines()[2] == "kedge_g 0.25"


@pytest.mark.parametrize(
    ("observed", "cumulative"),
    [
        ([0.0], [1, 1, 1, 1]),
        ([0.1], [1, 1, 1, 1]),  # le is inclusive: a value on a bound counts in that bucket
        ([0.1000001], [0, 1, 1, 1]),
        ([0.5, 0.5], [0, 2, 2, 2]),
        ([10.0], [0, 0, 1, 1]),
        ([10.5, 99.0], [0, 0, 0, 2]),
        ([], [0, 0, 0, 0]),
    ],
)
def test_histogram_buckets(observed: list[float], cumulative: list[int]) -> None:
    h = MetricsRegistry().histogram("kedge_x_seconds", "x", (), (0.1, 1.0, 10.0)).labels()
    for v in observed:
        h.observe(v)
    assert h.cumulative_counts() == cumulative
    assert h.count == len(observed)
    assert h.sum == pytest.approx(sum(observed))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (3.0, "3"),
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (1e20, "1e+20"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (-2.5, "-2.5"),
    ],
)
def test_value_formatting(value: float, text: str) -> None:
    r = MetricsRegistry()
    r.gauge("kedge_g", "g").set(value)
    assert r.render().decode().splitlines()[2] == f"kedge_g {text}"


def test_remove_forgets_a_series() -> None:
    r = MetricsRegistry()
    g = r.gauge("kedge_backend_endpoints", "e", ("backend",))
    g.labels("old").set(3)
    g.labels("new").set(1)
    g.remove("old")
    g.remove("never-existed")
    assert [labels for _, labels, _ in _samples(r.render())] == [{"backend": "new"}]


def test_registries_are_independent() -> None:
    a, b = MetricsRegistry(), MetricsRegistry()
    EdgeMetrics(a)
    EdgeMetrics(b).requests.labels("l", "r", "b", "200").inc()
    assert b"kedge_requests_total{" not in a.render()
    assert b"kedge_requests_total{" in b.render()


def test_edge_metrics_names_types_and_labels() -> None:
    r = MetricsRegistry()
    m = EdgeMetrics(r)
    m.requests.labels("web", "api", "api-pool", "200").inc()
    m.request_duration.labels("api", "api-pool").observe(0.003)
    m.connections_accepted.labels("web").inc()
    m.connections_active.labels("web").inc()
    m.h2_floods.labels("web", "ping-flood").inc()
    m.auth_decisions.labels("api", "allow").inc()
    m.discovered_routes.set(2)
    m.discovery_problems.labels("invalid").set(1)
    for family in (m.upstream_connections_opened, m.upstream_connect_failures):
        family.labels("api-pool").inc()
    m.upstream_retries.labels("api-pool").inc()
    m.backend_endpoints.labels("api-pool").set(3)
    m.config_reloads.labels("success").inc()
    m.config_generation.set(7)
    m.draining.set(1)
    m.bytes_in.inc(10)
    m.bytes_out.inc(20)
    text = r.render().decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert types == {
        "kedge_requests_total": "counter",
        "kedge_request_duration_seconds": "histogram",
        "kedge_errors_total": "counter",
        "kedge_connections_accepted_total": "counter",
        "kedge_connections_rejected_total": "counter",
        "kedge_connections_active": "gauge",
        "kedge_http2_connections_closed_total": "counter",
        "kedge_auth_decisions_total": "counter",
        "kedge_discovered_routes": "gauge",
        "kedge_endpoint_in_flight": "gauge",
        "kedge_endpoint_latency_ewma_seconds": "gauge",
        "kedge_endpoint_available": "gauge",
        "kedge_discovery_problems": "gauge",
        "kedge_upstream_connections_opened_total": "counter",
        "kedge_upstream_connect_failures_total": "counter",
        "kedge_upstream_retries_total": "counter",
        "kedge_backend_endpoints": "gauge",
        "kedge_endpoint_ejections_total": "counter",
        "kedge_backend_healthy_endpoints": "gauge",
        "kedge_health_checks_total": "counter",
        "kedge_config_reloads_total": "counter",
        "kedge_tls_reloads_total": "counter",
        "kedge_config_generation": "gauge",
        "kedge_draining": "gauge",
        "kedge_request_bytes_total": "counter",
    }
    samples = _samples(r.render())
    label_keys = {name: tuple(labels) for name, labels, _ in samples}
    assert label_keys["kedge_requests_total"] == ("listener", "route", "backend", "code")
    assert label_keys["kedge_request_duration_seconds_bucket"] == ("route", "backend", "le")
    assert label_keys["kedge_config_generation"] == ()
    assert label_keys["kedge_http2_connections_closed_total"] == ("listener", "kind")
    assert label_keys["kedge_auth_decisions_total"] == ("route", "verdict")
    values = {(name, tuple(labels.values())): value for name, labels, value in samples}
    assert values[("kedge_requests_total", ("web", "api", "api-pool", "200"))] == "1"
    assert values[("kedge_request_bytes_total", ("in",))] == "10"
    assert values[("kedge_request_bytes_total", ("out",))] == "20"
    assert values[("kedge_config_reloads_total", ("failure",))] == "0"
    assert values[("kedge_draining", ())] == "1"
    les = [labels["le"] for name, labels, _ in samples if name.endswith("_bucket")]
    assert les == [*(format(b, "g") for b in DURATION_BUCKETS), "+Inf"]


def test_edge_metrics_start_every_error_kind_at_zero() -> None:
    r = MetricsRegistry()
    EdgeMetrics(r)
    kinds = {
        labels["kind"]: value
        for name, labels, value in _samples(r.render())
        if name == "kedge_errors_total"
    }
    assert kinds == dict.fromkeys(all_error_kinds(), "0")


def test_a_gauge_collector_renders_series_computed_at_scrape_time() -> None:
    r = MetricsRegistry()
    g = r.gauge("kedge_things", "Things.", ("backend", "endpoint"))
    state = [(("b", "10.0.0.2:80"), 2.0), (("a", 'we"ird\n'), 0.5)]
    g.set_collector(lambda: state)
    text = r.render().decode()
    assert 'kedge_things{backend="a",endpoint="we\\"ird\\n"} 0.5\n' in text
    assert text.index('backend="a"') < text.index('backend="b"')  # sorted
    state.pop()
    assert 'backend="a"' not in r.render().decode()  # series go with the state

    def broken() -> list[tuple[tuple[str, ...], float]]:
        raise RuntimeError("bug")

    g.set_collector(broken)
    assert "# TYPE kedge_things gauge" in r.render().decode()  # the scrape still works

"""Tests of the locality bench's pure parts: configs, access-log reading, timings, tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kedge.edge.config_parser import parse_edge_config

from .locality_scenarios import (
    FailoverSummary,
    LogEntry,
    Phase,
    failover_config,
    failover_summary,
    format_failover,
    format_nearer,
    format_zone,
    median_ms,
    nearer_config,
    parse_time,
    per_second,
    read_entries,
    remote_edge_config,
    tally,
    zone_config,
)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0.0),
        ("1970-01-01T00:00:01.5Z", 1.5),
        ("2023-11-14T22:13:20.000Z", T0),
        ("2023-11-14T22:13:20.123Z", T0 + 0.123),
        ("2024-02-29T00:00:00.001Z", 1_709_164_800.001),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text", ["2023-11-14 22:13:20Z", "2023-11-14T22:13:20+01:00", "yesterday", "2023-11-14T22Z"]
)
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def _line(ms: int, endpoint: str | None, status: int, duration: float = 1.0) -> bytes:
    stamp = f"2023-11-14T22:13:20.{ms:03d}Z"
    return json.dumps(
        {"time": stamp, "status": status, "endpoint": endpoint, "duration_ms": duration}
    ).encode()


def test_read_entries_skips_events_499_and_a_torn_line() -> None:
    log = b"\n".join(
        [
            b'{"time":"2023-11-14T22:13:20.000Z","level":"info","message":"edge started"}',
            _line(1, "127.0.0.1:1", 200, 2.5),
            _line(2, None, 503),
            _line(3, "127.0.0.1:2", 499),
            _line(4, "127.0.0.1:2", 502, 30.0),
            b'{"time":"2023-11-14T22:13:20.005Z","status":2',
        ]
    )
    assert read_entries(log) == [
        LogEntry(T0 + 0.001, "127.0.0.1:1", 200, 2.5),
        LogEntry(T0 + 0.002, None, 503, 1.0),
        LogEntry(T0 + 0.004, "127.0.0.1:2", 502, 30.0),
    ]


def test_tally_counts_groups_failures_and_strangers() -> None:
    entries = [
        LogEntry(T0, "a1", 200),
        LogEntry(T0, "a2", 200),
        LogEntry(T0, "b1", 404),  # an answer, not a failure
        LogEntry(T0, "a1", 502),  # a failure, whoever it was
        LogEntry(T0, None, 503),
        LogEntry(T0, "x", 200),
    ]
    groups = {"a1": "zone a", "a2": "zone a", "b1": "zone b", "b2": "zone b"}
    assert tally(entries, groups) == {"zone a": 2, "zone b": 1, "failed": 2, "other": 1}


def test_median_ms_per_group_ignores_failures() -> None:
    entries = [
        LogEntry(T0, "n", 200, 2.0),
        LogEntry(T0, "n", 200, 4.0),
        LogEntry(T0, "n", 200, 3.0),
        LogEntry(T0, "f", 200, 20.0),
        LogEntry(T0, "f", 502, 900.0),
        LogEntry(T0, "f", 200),  # no duration
    ]
    assert median_ms(entries, {"n": "near", "f": "far"}) == {"near": 3.0, "far": 20.0}


def _timeline() -> list[LogEntry]:
    local, remote = "L", "R"
    return [
        LogEntry(T0 + 0.5, local, 200),
        LogEntry(T0 + 4.9, local, 200),
        LogEntry(T0 + 5.004, local, 200),  # in flight at the kill, still answered
        LogEntry(T0 + 5.010, local, 502),  # every try failed
        LogEntry(T0 + 5.030, remote, 200),
        LogEntry(T0 + 9.0, remote, 200),
        LogEntry(T0 + 15.2, remote, 200),
        LogEntry(T0 + 15.25, local, 200),
        LogEntry(T0 + 15.8, remote, 200),
        LogEntry(T0 + 16.0, local, 200),
    ]


def test_failover_summary_phases_and_timings() -> None:
    s = failover_summary(_timeline(), {"L"}, kill_at=T0 + 5.0, restart_at=T0 + 15.0)
    assert s.phases == (
        Phase("before the kill", 2, 2, 0, 0),
        Phase("local endpoints down", 4, 1, 2, 1),
        Phase("after the restart", 4, 2, 2, 0),
    )
    assert s.failed == 1
    assert s.last_local_after_kill_s == pytest.approx(0.004, abs=1e-6)
    assert s.first_remote_after_kill_s == pytest.approx(0.030, abs=1e-6)
    assert s.first_local_after_restart_s == pytest.approx(0.25, abs=1e-6)
    assert s.last_remote_after_restart_s == pytest.approx(0.8, abs=1e-6)


def test_failover_summary_when_nothing_moves() -> None:
    entries = [LogEntry(T0 + t, "L", 200) for t in (1.0, 6.0, 16.0)]
    s = failover_summary(entries, {"L"}, kill_at=T0 + 5.0, restart_at=T0 + 15.0)
    assert s.first_remote_after_kill_s is None
    assert s.last_local_after_kill_s == pytest.approx(1.0, abs=1e-6)
    assert s.last_remote_after_restart_s is None


def test_per_second_buckets_by_finish_time() -> None:
    assert per_second(_timeline(), {"L"}, T0) == [
        (0, 1, 0, 0),
        (4, 1, 0, 0),
        (5, 1, 1, 1),
        (9, 0, 1, 0),
        (15, 1, 2, 0),
        (16, 1, 0, 0),
    ]


def _summary(failed: int, moved: float | None, back: float | None) -> FailoverSummary:
    return FailoverSummary(
        phases=(Phase("before the kill", 10, 10, 0, 0), Phase("down", 10, 0, 10 - failed, failed)),
        last_local_after_kill_s=moved,
        first_remote_after_kill_s=0.01,
        first_local_after_restart_s=back,
        last_remote_after_restart_s=back,
    )


@pytest.mark.parametrize(
    ("summary", "non_2xx", "socket", "verdicts"),
    [
        (_summary(0, 0.5, 0.9), 0, 0, ["goal 0: met", "1.1 s: met", "1.1 s: met"]),
        # kedge's 5xx and wrk's non-2xx are the same two failures, not four
        (_summary(2, 0.5, 0.9), 2, 0, ["failed requests 2 ", "goal 0: NOT met"]),
        (_summary(0, 0.5, 0.9), 0, 3, ["failed requests 3 ", "goal 0: NOT met"]),
        (_summary(0, 2.0, 0.9), 0, 0, ["2,000 ms after the kill (goal <= 1.1 s: NOT met"]),
        (_summary(0, 0.5, None), 0, 0, ["back never after the restart (goal <= 1.1 s: NOT met"]),
    ],
)
def test_format_failover_verdicts(
    summary: FailoverSummary, non_2xx: int, socket: int, verdicts: list[str]
) -> None:
    text = format_failover(
        "## h", summary, [(0, 10, 0, 0)], wrk_non_2xx=non_2xx, wrk_socket_errors=socket,
        interval_s=1.0,
    )  # fmt: skip
    verdict = text.splitlines()[-1]
    for expected in verdicts:
        assert expected in verdict
    assert text.startswith("## h\n\n| phase |")
    assert "| 0 | 10 | 0 | 0 |" in text


@pytest.mark.parametrize(
    ("counts", "errors", "verdict"),
    [
        ({"zone a": 990, "zone b": 10, "failed": 0, "other": 0}, 0, "99.00% (goal >= 99%: met)"),
        ({"zone a": 989, "zone b": 11, "failed": 0, "other": 0}, 0, "98.90% (goal >= 99%: NOT"),
        ({"zone a": 995, "zone b": 0, "failed": 5, "other": 0}, 0, "99.50% (goal >= 99%: met)"),
        ({"zone a": 1000, "zone b": 0, "failed": 0, "other": 0}, 1, "(goal >= 99%: NOT met)"),
    ],
)
def test_format_zone_verdict(counts: dict[str, int], errors: int, verdict: str) -> None:
    text = format_zone("## h", counts, errors)
    assert verdict in text.splitlines()[-1]


@pytest.mark.parametrize(
    ("counts", "errors", "met"),
    [
        ({"near": 900, "far": 100, "failed": 0, "other": 0}, 0, True),
        ({"near": 400, "far": 600, "failed": 0, "other": 0}, 0, False),
        ({"near": 900, "far": 100, "failed": 1, "other": 0}, 0, False),
        ({"near": 900, "far": 100, "failed": 0, "other": 0}, 2, False),
    ],
)
def test_format_nearer_verdict(counts: dict[str, int], errors: int, met: bool) -> None:
    text = format_nearer("## h", counts, {"near": 3.0, "far": 21.0}, errors)
    assert text.splitlines()[-1].endswith("met)" if met else "NOT met)")
    assert text.splitlines()[-1].endswith(": met)") == met
    assert "| near | 900 |" in text or "| near | 400 |" in text


CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("zone", zone_config(listen_port=8001, admin_port=8002, zone_a=[9001, 9002], zone_b=[9003])),
    ("remote", remote_edge_config(listen_port=8001, admin_port=8002, ports=[9001, 9002])),
    (
        "failover",
        failover_config(
            listen_port=8001,
            admin_port=8002,
            local=[9001, 9002],
            remote_edge_port=9100,
            interval_s=1.0,
            attempts=3,
        ),
    ),
    (
        "nearer",
        nearer_config(
            listen_port=8001, admin_port=8002, near_port=9001, far_port=9002, parked_port=9003
        ),
    ),
]


@pytest.mark.parametrize(("name", "data"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_configs_are_valid_kedge_configs(name: str, data: dict[str, Any]) -> None:
    config = parse_edge_config(data, f"{name}.yaml")
    (backend,) = config.backends
    assert backend.name == "bench"
    assert [r.backend for r in config.routes] == ["bench"]


def test_failover_config_checks_fast_and_retries() -> None:
    data = failover_config(
        listen_port=1, admin_port=2, local=[3], remote_edge_port=4, interval_s=0.5, attempts=4
    )
    backend = data["backends"][0]
    assert backend["health_check"]["interval"] == "0.5s"
    assert backend["health_check"]["timeout"] == "0.5s"
    assert backend["retries"] == {"attempts": 4}
    assert backend["remote_clusters"] == [{"name": "b", "endpoints": ["127.0.0.1:4"]}]
    assert data["locality"] == {"cluster": "a", "zone": "a"}


def test_nearer_config_gives_both_remotes_one_priority() -> None:
    data = nearer_config(listen_port=1, admin_port=2, near_port=3, far_port=4, parked_port=5)
    remotes = data["backends"][0]["remote_clusters"]
    assert {r["priority"] for r in remotes} == {0}
    assert len(remotes) == 2
    (parked,) = data["backends"][0]["resolver"]["static"]["endpoints"]
    assert parked["labels"]["cluster"] not in {r["name"] for r in remotes} | {"a"}

"""FloodGuard: per-window flood budgets for one HTTP/2 connection, with an injected clock."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kedge.core.codec.h2_frames import FrameCounts
from kedge.core.codec.h2_guard import ENHANCE_YOUR_CALM, FloodGuard, FloodLimits, FloodVerdict

LIMIT = 5
OFF = FloodLimits(
    max_pings=0,
    max_settings=0,
    max_window_updates=0,
    max_priority=0,
    max_empty_frames=0,
    max_resets=0,
    max_server_resets=0,
    max_new_streams_per_read=0,
)

# (limit field, FrameCounts field or "server_resets", verdict kind)
KINDS = [
    ("max_pings", "ping", "ping-flood"),
    ("max_settings", "settings", "settings-flood"),
    ("max_window_updates", "window_update", "window-update-flood"),
    ("max_priority", "priority", "priority-flood"),
    ("max_empty_frames", "empty", "empty-frame-flood"),
    ("max_resets", "rst_stream", "rapid-reset"),
    ("max_server_resets", "server_resets", "server-reset-flood"),
]
KIND_IDS = [kind for _, _, kind in KINDS]


def guard_for(limit_field: str, limit: int = LIMIT, window: float = 10.0) -> FloodGuard:
    """Only the check under test is on, so a verdict can only come from it."""
    return FloodGuard(dataclasses.replace(OFF, window=window, **{limit_field: limit}))


def observe(guard: FloodGuard, what: str, n: int, now: float) -> FloodVerdict | None:
    if what == "server_resets":
        return guard.observe(FrameCounts(), now, server_resets=n)
    return guard.observe(FrameCounts(**{what: n}), now)


@pytest.mark.parametrize(("limit_field", "what", "kind"), KINDS, ids=KIND_IDS)
def test_limit_is_allowed_and_one_more_trips(limit_field: str, what: str, kind: str) -> None:
    guard = guard_for(limit_field)
    for i in range(LIMIT):
        assert observe(guard, what, 1, now=i * 0.1) is None
    verdict = observe(guard, what, 1, now=0.6)
    assert verdict is not None
    assert (verdict.error_code, verdict.kind) == (ENHANCE_YOUR_CALM, kind)
    assert "\n" not in verdict.reason and str(LIMIT) in verdict.reason


@pytest.mark.parametrize(("limit_field", "what", "kind"), KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(("n", "trips"), [(LIMIT, False), (LIMIT + 1, True)])
def test_one_read_at_limit_and_over(
    limit_field: str, what: str, kind: str, n: int, trips: bool
) -> None:
    verdict = observe(guard_for(limit_field), what, n, now=100.0)
    assert (verdict.kind if verdict else None) == (kind if trips else None)


@pytest.mark.parametrize(("limit_field", "what", "kind"), KINDS, ids=KIND_IDS)
def test_zero_turns_a_check_off(limit_field: str, what: str, kind: str) -> None:
    guard = guard_for(limit_field, limit=0)
    assert observe(guard, what, 10**6, now=0.0) is None


@pytest.mark.parametrize(
    ("second_at", "second_count", "trips"),
    [
        # LIMIT at t=0 (first bucket: 0..10 s), then more later.
        (9.9, 1, True),  # same bucket: 5 + 1
        (10.0, 1, True),  # next bucket starts: previous weighs 1.0 -> 5 + 1
        (15.0, 2, False),  # previous weighs 0.5 -> 2.5 + 2
        (15.0, 3, True),  # 2.5 + 3
        (19.0, 4, False),  # previous weighs 0.1 -> 0.5 + 4
        (19.0, 5, True),  # 0.5 + 5
        (20.0, LIMIT, False),  # the burst has left the window
        (35.0, LIMIT, False),  # two buckets later: nothing remembered
        (35.0, LIMIT + 1, True),
    ],
)
def test_window_slides(second_at: float, second_count: int, trips: bool) -> None:
    guard = guard_for("max_pings")
    assert observe(guard, "ping", LIMIT, now=0.0) is None
    assert (observe(guard, "ping", second_count, now=second_at) is not None) is trips


def test_a_quiet_window_forgets_the_one_before() -> None:
    guard = guard_for("max_pings")
    assert observe(guard, "ping", LIMIT, now=0.0) is None  # bucket 0..10
    assert observe(guard, "ping", 0, now=12.0) is None  # bucket 10..20, previous = 5
    assert observe(guard, "ping", LIMIT, now=35.0) is None  # bucket 30..40: both forgotten
    assert observe(guard, "ping", 1, now=35.0) is not None


def test_a_steady_rate_under_the_limit_never_trips() -> None:
    guard = guard_for("max_pings", limit=100)
    # 9.5 pings a second for 10 minutes: 95 per window.
    for tick in range(6000):
        assert guard.observe(FrameCounts(ping=1 if tick % 20 else 0), tick * 0.1) is None


def test_a_steady_rate_over_the_limit_trips_within_a_window() -> None:
    guard = guard_for("max_pings", limit=100)
    tripped_at = next(
        tick * 0.1
        for tick in range(1000)
        if guard.observe(FrameCounts(ping=2), 1000.0 + tick * 0.1) is not None
    )
    assert tripped_at <= 5.1  # 20/s crosses 100 after ~5 s


@pytest.mark.parametrize(
    ("data_sent", "updates", "trips"),
    [
        (0, LIMIT, False),
        (0, LIMIT + 1, True),
        (1, LIMIT + 2, False),  # any DATA earns a stream and a connection update
        (1, LIMIT + 3, True),
        (16384, LIMIT + 2, False),
        (16385, LIMIT + 4, False),  # two 16 KiB units started
        (16385, LIMIT + 5, True),
        (10 * 16384, LIMIT + 20, False),
        (10 * 16384, LIMIT + 21, True),
    ],
)
def test_window_updates_explained_by_data_sent(data_sent: int, updates: int, trips: bool) -> None:
    guard = guard_for("max_window_updates")
    verdict = guard.observe(FrameCounts(window_update=updates), 1.0, data_sent=data_sent)
    assert (verdict is not None) is trips
    if trips:
        assert verdict is not None and verdict.kind == "window-update-flood"


def test_window_update_credit_is_spent_across_reads() -> None:
    guard = guard_for("max_window_updates")
    assert guard.observe(FrameCounts(), 0.0, data_sent=3 * 16384) is None  # 6 credits
    assert guard.observe(FrameCounts(window_update=4), 0.1) is None  # 4 credits spent
    assert guard.snapshot()["window_update_credit"] == 2
    assert guard.observe(FrameCounts(window_update=2 + LIMIT), 0.2) is None
    assert guard.observe(FrameCounts(window_update=1), 0.3) is not None


def test_window_update_credit_lapses() -> None:
    guard = guard_for("max_window_updates")
    assert guard.observe(FrameCounts(), 0.0, data_sent=100 * 16384) is None  # 200 credits
    assert guard.observe(FrameCounts(), 12.0) is None  # next bucket: kept
    assert guard.snapshot()["window_update_credit"] == 200
    assert guard.observe(FrameCounts(), 22.0) is None  # and the one after: lapsed
    assert guard.snapshot()["window_update_credit"] == 0
    assert guard.observe(FrameCounts(window_update=LIMIT + 1), 23.0) is not None


def test_first_verdict_wins_and_names_its_kind() -> None:
    guard = FloodGuard(FloodLimits(max_pings=1, max_resets=1))
    verdict = guard.observe(FrameCounts(ping=1, rst_stream=2), 0.0)
    assert verdict == FloodVerdict(ENHANCE_YOUR_CALM, "rapid-reset", verdict.reason)  # type: ignore[union-attr]


def test_headers_and_data_are_never_a_flood() -> None:
    guard = FloodGuard(FloodLimits())
    busy = FrameCounts(headers=10_000, new_streams=10_000, data_bytes=10**9)
    assert guard.observe(busy, 0.0) is None


@pytest.mark.parametrize(
    ("limit", "new_streams", "refused"),
    [
        (200, 0, 0),
        (200, 200, 0),
        (200, 201, 1),
        (200, 500, 300),
        (1, 2, 1),
        (0, 10_000, 0),  # off
    ],
)
def test_refused_in_read(limit: int, new_streams: int, refused: int) -> None:
    guard = FloodGuard(FloodLimits(max_new_streams_per_read=limit))
    assert guard.refused_in_read(FrameCounts(new_streams=new_streams)) == refused


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(min_value=0, max_value=10**6), min_size=9, max_size=9),
            st.integers(min_value=0, max_value=10**6),
            st.floats(min_value=0.0, max_value=100.0),
        ),
        max_size=20,
    )
)
def test_all_zero_limits_never_trip(reads: list[tuple[list[int], int, float]]) -> None:
    guard = FloodGuard(OFF)
    now = 0.0
    for fields, server_resets, step in reads:
        now += step
        counts = FrameCounts(*fields)
        assert guard.observe(counts, now, server_resets=server_resets) is None
        assert guard.refused_in_read(counts) == 0


def test_snapshot_reports_the_sliding_counts() -> None:
    guard = FloodGuard(FloodLimits())
    assert guard.snapshot() == {
        "pings": 0,
        "settings": 0,
        "window_updates": 0,
        "priority": 0,
        "empty": 0,
        "resets": 0,
        "server_resets": 0,
        "window_update_credit": 0,
    }
    guard.observe(FrameCounts(ping=4, rst_stream=10, empty=2), 0.0, server_resets=3)
    guard.observe(FrameCounts(ping=2), 15.0)  # previous bucket weighs 0.5
    snap = guard.snapshot()
    assert (snap["pings"], snap["resets"], snap["empty"], snap["server_resets"]) == (4, 5, 1, 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"window": 0.0}, {"window": -1.0}, {"max_pings": -1}, {"max_new_streams_per_read": -5}],
)
def test_limits_reject_impossible_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FloodLimits(**kwargs)  # type: ignore[arg-type]

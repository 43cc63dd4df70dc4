"""Peak-EWMA load and the p2c_ewma, least_request and round_robin pickers (pure, with a
fake clock)."""

from __future__ import annotations

import math
from collections import Counter
from random import Random

import pytest

from kedge.edge.balancing.load import LoadBook, decayed, observe
from kedge.edge.balancing.policies import p2c
from kedge.edge.config import Address
from kedge.edge.discovery.model import Endpoint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("estimate", "since", "rtt", "want"),
    [
        (0.010, 0.0, 0.050, 0.050),  # a higher sample is taken at once (peak)
        (0.010, 5.0, 0.050, 0.050),
        (0.050, 0.0, 0.010, 0.050),  # same instant: a lower sample changes nothing
        # lower sample after one decay period: blended with weight 1 - 1/e
        (0.050, 10.0, 0.010, 0.050 / math.e * (1 / math.e) + 0.010 * (1 - 1 / math.e)),
    ],
)
def test_observe_is_peak_then_decay(estimate: float, since: float, rtt: float, want: float) -> None:
    assert observe(estimate, since, rtt, 10.0) == pytest.approx(want)


def test_an_idle_estimate_decays_toward_zero() -> None:
    assert decayed(0.1, 10.0, 10.0) == pytest.approx(0.1 / math.e)
    assert decayed(0.1, 0.0, 10.0) == 0.1
    assert decayed(0.1, 100.0, 10.0) < 0.00001


def test_book_counts_in_flight_and_learns_latency() -> None:
    clock = Clock()
    book = LoadBook(decay=10.0, default_rtt=0.005, clock=clock)
    assert book.cost("a") == 0.005  # unknown: the default, not zero (no stampede)
    t = book.begin("a")
    book.begin("a")
    assert book.in_flight("a") == 2
    assert book.cost("a") == pytest.approx(0.005 * 3)
    clock.now += 0.2
    book.end("a", t, 0.2)
    assert book.in_flight("a") == 1
    assert book.estimate("a") == pytest.approx(0.2)  # peak
    book.end("a", t, None)  # the client left: no sample
    assert book.in_flight("a") == 0 and book.estimate("a") == pytest.approx(0.2)
    clock.now += 10.0
    assert book.estimate("a") == pytest.approx(0.2 / math.e)


def test_state_is_keyed_by_identity_not_position() -> None:
    """Reordering or rebuilding the endpoint list keeps what was learnt (NovaEdge lost it)."""
    clock = Clock()
    book = LoadBook(clock=clock)
    book.end("10.0.0.2:80", book.begin("10.0.0.2:80"), 0.5)
    eps = [Endpoint(Address(f"10.0.0.{i}", 80)) for i in (3, 2, 1)]
    assert book.estimate(eps[1].key) == pytest.approx(0.5)
    assert book.estimate(eps[0].key) == book.default_rtt


def test_prune_drops_only_idle_old_entries() -> None:
    clock = Clock()
    book = LoadBook(decay=1.0, clock=clock, max_entries=3)
    book.get("old")
    busy = book.begin("busy")
    del busy
    clock.now += 100.0
    book.get("recent")
    book.get("new")  # the 4th: prunes "old" (idle, stale), keeps "busy" (in flight)
    assert len(book) == 3  # busy, recent, new
    assert book.in_flight("busy") == 1


def _eps(n: int) -> list[Endpoint]:
    return [Endpoint(Address("10.0.0.1", 8000 + i)) for i in range(n)]


def test_p2c_ewma_avoids_a_slow_endpoint() -> None:
    clock = Clock()
    book = LoadBook(clock=clock)
    eps = _eps(10)
    for e in eps:
        book.end(e.key, book.begin(e.key), 0.002)
    slow = eps[3].key
    book.end(slow, book.begin(slow), 0.020)  # ten times slower
    rng = Random(7)
    picks = Counter(p2c(eps, book.cost, rng).key for _ in range(10_000))  # type: ignore[union-attr]
    # The two samples are distinct and any other endpoint is cheaper, so the slow one is
    # never chosen (round robin would send it 10% of the requests).
    assert picks[slow] == 0
    assert len(picks) == 9


def test_p2c_ewma_weighs_load_too() -> None:
    clock = Clock()
    book = LoadBook(clock=clock)
    a, b = _eps(2)
    book.end(a.key, book.begin(a.key), 0.002)
    book.end(b.key, book.begin(b.key), 0.004)
    for _ in range(3):
        book.begin(a.key)  # a: 0.002 * 4 = 0.008 > b: 0.004 * 1
    assert p2c([a, b], book.cost, Random(1)) == b


def test_weights_divide_the_cost() -> None:
    clock = Clock()
    book = LoadBook(clock=clock)
    a = Endpoint(Address("10.0.0.1", 80), weight=4)
    b = Endpoint(Address("10.0.0.2", 80))
    book.end(a.key, book.begin(a.key), 0.010)
    book.end(b.key, book.begin(b.key), 0.004)
    assert p2c([a, b], book.cost, Random(1)) == a  # 0.010 / 4 < 0.004

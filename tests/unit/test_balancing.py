"""Balancing policies: round robin and power-of-two-choices over endpoint tuples."""

from __future__ import annotations

from collections import Counter
from random import Random

from hypothesis import given
from hypothesis import strategies as st

from kedge.edge.balancing.policies import p2c, round_robin
from kedge.edge.config import Address
from kedge.edge.discovery.model import Endpoint


def eps(n: int, weights: list[int] | None = None) -> tuple[Endpoint, ...]:
    w = weights or [1] * n
    return tuple(Endpoint(Address("10.0.0.1", 8000 + i), weight=w[i]) for i in range(n))


def test_round_robin_is_even() -> None:
    e = eps(5)
    picks = Counter(round_robin(e, i).key for i in range(100))  # type: ignore[union-attr]
    assert set(picks.values()) == {20}


def test_round_robin_skips_excluded() -> None:
    e = eps(3)
    got = {round_robin(e, i, exclude={e[1].key}) for i in range(10)}
    assert got == {e[0], e[2]}
    assert round_robin(e, 0, exclude={x.key for x in e}) is None
    assert round_robin((), 0) is None


def test_p2c_prefers_the_less_loaded() -> None:
    e = eps(2)
    load = {e[0].key: 10.0, e[1].key: 0.0}
    rng = Random(1)
    assert all(p2c(e, load.__getitem__, rng) == e[1] for _ in range(50))


def test_p2c_spreads_evenly_at_equal_load() -> None:
    e = eps(4)
    rng = Random(7)
    picks = Counter(p2c(e, lambda _k: 0.0, rng).key for _ in range(8000))  # type: ignore[union-attr]
    assert len(picks) == 4
    assert max(picks.values()) / min(picks.values()) < 1.2


def test_p2c_weights_scale_load() -> None:
    e = eps(2, [1, 4])
    load = {e[0].key: 1.0, e[1].key: 3.0}  # 3/4 < 1/1: the weighted one is less busy
    assert p2c(e, load.__getitem__, Random(0)) == e[1]


@given(st.integers(0, 8), st.sets(st.integers(0, 7)), st.integers(0, 2**32))
def test_p2c_never_picks_excluded(n: int, excluded: set[int], seed: int) -> None:
    e = eps(n)
    ex = {e[i].key for i in excluded if i < n}
    got = p2c(e, lambda _k: 0.0, Random(seed), ex)
    if len(ex) == n:
        assert got is None
    else:
        assert got is not None and got.key not in ex

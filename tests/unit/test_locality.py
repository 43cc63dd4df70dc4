"""Locality tiers and spill-over shares (pure)."""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest

from kedge.edge.balancing.locality import Here, Tiers, pick_tier, tier_of, tier_shares
from kedge.edge.config import Address
from kedge.edge.discovery.model import Endpoint

HERE = Here(cluster="a", region="eu", zone="eu-1")


def ep(port: int, **labels: str) -> Endpoint:
    return Endpoint(Address("10.0.0.1", port), tuple(sorted(labels.items())))


def prio(cluster: str) -> int | None:
    return {"b": 0, "c": 1}.get(cluster)


@pytest.mark.parametrize(
    ("labels", "tier"),
    [
        ({}, 0),  # no labels: never farther
        ({"zone": "eu-1"}, 0),
        ({"zone": "eu-2"}, 1),
        ({"zone": "eu-2", "region": "eu", "cluster": "a"}, 1),
        ({"region": "us"}, 2),
        ({"cluster": "a", "region": "us", "zone": "us-1"}, 2),
        ({"cluster": "b"}, 3),
        ({"cluster": "c", "zone": "eu-1"}, 4),  # another cluster, whatever its zone
        ({"cluster": "z"}, 1004),  # not a configured remote: after every listed one
    ],
)
def test_tier_of(labels: dict[str, str], tier: int) -> None:
    assert tier_of(ep(1, **labels), HERE, prio) == tier


def test_unknown_locality_puts_everything_in_one_tier() -> None:
    assert tier_of(ep(1, zone="x", cluster="y"), Here(), prio) == 0


def test_configured_remote_clusters_come_after_local_endpoints_anyway() -> None:
    assert tier_of(ep(1, cluster="c"), Here(), prio) == 4
    assert tier_of(ep(1), Here(), prio) == 0


@pytest.mark.parametrize(
    ("health", "shares"),
    [
        ([(3, 3), (3, 3)], [1.0, 0.0]),  # healthy local tier keeps everything
        ([(7, 10), (3, 3)], [1.0, 0.0]),  # at the 70% capacity: still everything
        ([(5, 10), (3, 3)], [5 / 7, 2 / 7]),  # below: spills in proportion, no cliff
        ([(0, 3), (3, 3)], [0.0, 1.0]),
        ([(1, 10), (1, 10)], [0.5, 0.5]),  # degraded everywhere: normalised
        ([(0, 3), (0, 3)], [0.0, 0.0]),
        ([(2, 4), (0, 0), (2, 2)], [5 / 7, 0.0, 2 / 7]),  # an empty tier is skipped
    ],
)
def test_tier_shares(health: list[tuple[int, int]], shares: list[float]) -> None:
    assert tier_shares(health, 0.7) == pytest.approx(shares)


def test_pick_tier_follows_the_shares() -> None:
    endpoints = [ep(i, zone="eu-1") for i in range(5)] + [ep(10 + i, zone="eu-2") for i in range(5)]
    half_down = {e.key for e in endpoints[:3]}  # 2 of 5 local endpoints available: 40%
    tiers = Tiers.build(endpoints, lambda k: k not in half_down, HERE, prio, 0.7)
    assert [len(g) for g in tiers.groups] == [2, 5]
    assert tiers.shares == pytest.approx((0.4 / 0.7, 1 - 0.4 / 0.7))
    rng = Random(3)
    seen = Counter(pick_tier(tiers, rng)[0].label("zone") for _ in range(7000))
    assert seen["eu-1"] / 7000 == pytest.approx(0.4 / 0.7, abs=0.02)


def test_a_healthy_local_zone_keeps_all_the_traffic() -> None:
    endpoints = [ep(1, zone="eu-1"), ep(2, zone="eu-2"), ep(3, cluster="b")]
    tiers = Tiers.build(endpoints, lambda k: True, HERE, prio, 0.7)
    rng = Random(1)
    assert all(pick_tier(tiers, rng) == (endpoints[0],) for _ in range(1000))


def test_untried_is_the_nearest_tier_a_request_has_not_tried() -> None:
    local = [ep(1, zone="eu-1"), ep(2, zone="eu-1")]
    far = [ep(3, zone="eu-2")]
    remote = [ep(4, cluster="b")]
    tiers = Tiers.build(local + far + remote, lambda k: k != far[0].key, HERE, prio, 0.7)
    assert tiers.untried([local[0].key]) == tuple(remote)  # eu-2 has no usable endpoint
    assert tiers.untried([local[0].key, remote[0].key]) == ()
    assert tiers.untried([]) == tuple(local)

"""Locality tiers and spill-over: which endpoints a request should prefer. Pure.

Tiers, nearest first: the edge's own zone, its region, its cluster, then other clusters
(each remote `priority` its own tier, lower first). An endpoint's place comes from its
labels (`zone`, `region`, `cluster`) against the edge's `locality`; a label or a locality
field that is not set never makes an endpoint farther.

Traffic is split between tiers as Envoy does with priority levels and its
over-provisioning factor: a tier whose healthy share is `h` can take `min(1, h /
healthy_capacity)` of what is left, so with `healthy_capacity` 0.7 a tier at 70% health
or more keeps all of its traffic, and below that it spills to the next tier in proportion
(not as a cliff). When all tiers together cannot take everything, the shares are
normalised (degraded mode): traffic follows the remaining capacity.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from random import Random

from kedge.edge.discovery.model import Endpoint

__all__ = ["Here", "Tiers", "pick_tier", "tier_of", "tier_shares"]

LOCAL_TIERS = 3  # same zone, same region, same cluster; other clusters come after


@dataclass(frozen=True, slots=True)
class Here:
    """Where this edge runs (the top-level `locality`)."""

    cluster: str | None = None
    region: str | None = None
    zone: str | None = None

    @property
    def known(self) -> bool:
        return bool(self.cluster or self.region or self.zone)


def _differs(label: str | None, mine: str | None) -> bool:
    return label is not None and mine is not None and label != mine


# Other clusters that no remote-cluster entry lists (labelled endpoints) come last.
UNLISTED_PRIORITY = 1001


def tier_of(endpoint: Endpoint, here: Here, remote_priority: Callable[[str], int | None]) -> int:
    """0 same zone, 1 same region, 2 same cluster, 3 + priority for other clusters.

    A configured remote cluster (`remote_priority` gives its priority) is always farther
    than the edge's own endpoints, even when the edge's own `cluster` is not set."""
    cluster = endpoint.label("cluster")
    if cluster is not None and cluster != here.cluster:
        priority = remote_priority(cluster)
        if priority is not None:
            return LOCAL_TIERS + priority
        if here.cluster is not None:
            return LOCAL_TIERS + UNLISTED_PRIORITY
    if _differs(endpoint.label("region"), here.region):
        return 2
    if _differs(endpoint.label("zone"), here.zone):
        return 1
    return 0


def tier_shares(health: Sequence[tuple[int, int]], healthy_capacity: float) -> list[float]:
    """The share of traffic per tier from (available, total) endpoints per tier."""
    shares: list[float] = []
    left = 1.0
    for available, total in health:
        if total == 0 or left <= 0:
            shares.append(0.0)
            continue
        share = min(left, min(1.0, (available / total) / healthy_capacity))
        shares.append(share)
        left -= share
    taken = sum(shares)
    if 0 < taken < 1.0:  # degraded: spread what exists over the capacity that is left
        shares = [s / taken for s in shares]
    return shares


@dataclass(frozen=True, slots=True)
class Tiers:
    """Usable endpoints grouped by tier (nearest first) and each tier's share."""

    groups: tuple[tuple[Endpoint, ...], ...]
    shares: tuple[float, ...]
    group_of: Mapping[str, int]  # endpoint key -> index in `groups` (all endpoints)

    @staticmethod
    def build(
        endpoints: Sequence[Endpoint],
        available: Callable[[str], bool],
        here: Here,
        remote_priority: Callable[[str], int | None],
        healthy_capacity: float,
    ) -> Tiers:
        by_tier: dict[int, list[Endpoint]] = {}
        for e in endpoints:
            by_tier.setdefault(tier_of(e, here, remote_priority), []).append(e)
        order = sorted(by_tier)
        groups: list[tuple[Endpoint, ...]] = []
        health: list[tuple[int, int]] = []
        group_of: dict[str, int] = {}
        for i, t in enumerate(order):
            members = by_tier[t]
            usable = tuple(e for e in members if available(e.key))
            groups.append(usable)
            health.append((len(usable), len(members)))
            group_of.update((e.key, i) for e in members)
        return Tiers(tuple(groups), tuple(tier_shares(health, healthy_capacity)), group_of)

    def untried(self, tried: Collection[str]) -> tuple[Endpoint, ...]:
        """The nearest tier none of `tried` belongs to that has usable endpoints (the last
        attempt of a request goes there: Envoy's previous_priorities, for failover when a
        whole tier just died and is not ejected yet); () when there is none."""
        used = {self.group_of[k] for k in tried if k in self.group_of}
        for i, group in enumerate(self.groups):
            if i not in used and group:
                return group
        return ()


def pick_tier(tiers: Tiers, rng: Random) -> tuple[Endpoint, ...]:
    """The endpoints of one tier, drawn by share (the nearest non-empty one on ties)."""
    groups, shares = tiers.groups, tiers.shares
    if len(groups) == 1:
        return groups[0]
    x = rng.random()
    for group, share in zip(groups, shares, strict=True):
        if x < share and group:
            return group
        x -= share
    for group in groups:  # rounding, or every share zero: the nearest with endpoints
        if group:
            return group
    return ()

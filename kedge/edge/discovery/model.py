"""Endpoints and resolver updates: the pure data that discovery produces and balancing reads.

A resolver emits a stream of `Update`s (`Reset | Add | Remove`, as in linkerd2-proxy);
`EndpointSet.fold` applies one to an immutable set and returns a new one. The request path
only ever reads the current set, so resolution never happens per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from kedge.edge.config import Address

__all__ = [
    "Add",
    "Endpoint",
    "EndpointSet",
    "Publish",
    "Remove",
    "Reset",
    "Resolver",
    "Update",
]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address of a backend, plus labels (cluster, region, zone, ...) and a weight."""

    address: Address
    labels: tuple[tuple[str, str], ...] = ()
    weight: int = 1
    ready: bool = True
    # Identity of the endpoint: per-endpoint state (pools, load) is keyed by it. Derived
    # once here, because the request path reads it several times per request.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", str(self.address))

    def label(self, name: str) -> str | None:
        for k, v in self.labels:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Reset:
    """Replace the whole set (a resolver's first answer, a relist, a new DNS answer)."""

    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class Add:
    """Add endpoints, or replace ones with the same key (labels or weight changed)."""

    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class Remove:
    keys: tuple[str, ...]


Update = Reset | Add | Remove
Publish = Callable[[Update], None]


@dataclass(frozen=True, slots=True)
class EndpointSet:
    """An immutable, ordered (by key) set of endpoints; `version` grows with every fold."""

    endpoints: tuple[Endpoint, ...] = ()
    version: int = 0

    @staticmethod
    def of(endpoints: Iterable[Endpoint], version: int = 0) -> EndpointSet:
        unique = {e.key: e for e in endpoints}
        return EndpointSet(tuple(unique[k] for k in sorted(unique)), version)

    def fold(self, update: Update) -> EndpointSet:
        if isinstance(update, Reset):
            return EndpointSet.of(update.endpoints, self.version + 1)
        current = {e.key: e for e in self.endpoints}
        if isinstance(update, Add):
            for e in update.endpoints:
                current[e.key] = e
        else:
            for k in update.keys:
                current.pop(k, None)
        return EndpointSet.of(current.values(), self.version + 1)

    @property
    def ready(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.ready)


class Resolver(Protocol):
    """Turns a backend's resolver config into a stream of updates.

    `run` loops until cancelled, calling `publish` with each update. It must never raise
    for a transient failure (log it, keep the last published set, retry with backoff):
    a lookup hiccup must not empty a backend.
    """

    async def run(self, publish: Publish) -> None: ...

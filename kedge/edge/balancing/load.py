"""Per-endpoint load: requests in flight and a peak-EWMA of response latency.

Peak-EWMA (Finagle, linkerd2-proxy): an observed latency above the current estimate
replaces it at once (a slowing endpoint is noticed on its first slow response); one below
it is blended in with weight `1 - exp(-Δt/τ)`, so the estimate decays toward recent
behaviour with time constant τ (`decay`, about 10 s). Reading the estimate decays it toward
zero by the time since the last observation, so an endpoint that was slow once is tried
again after a while instead of starving forever. The balancing cost is
`estimate * (in-flight + 1)`, divided by the endpoint's weight by the caller.

State is keyed by endpoint identity (`ip:port`) in one book the whole edge shares: it
survives endpoint-set updates, config reloads that rebuild a backend, and an endpoint that
two backends share counts its load once. NovaEdge indexed it by list position and lost it
on every change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["EndpointLoad", "LoadBook", "decayed", "observe"]


def decayed(estimate: float, since: float, decay: float) -> float:
    """`estimate`, `since` seconds after it was last updated, decayed toward zero."""
    if since <= 0 or estimate == 0:
        return estimate
    return estimate * math.exp(-since / decay)


def observe(estimate: float, since: float, rtt: float, decay: float) -> float:
    """The new estimate after one observed latency `rtt`, `since` seconds after the last."""
    current = decayed(estimate, since, decay)
    if rtt > current:
        return rtt  # peak: take a higher latency at once
    w = math.exp(-since / decay) if since > 0 else 1.0
    return current * w + rtt * (1.0 - w)


class EndpointLoad:
    __slots__ = ("estimate", "inflight", "stamp")

    def __init__(self, estimate: float, stamp: float) -> None:
        self.inflight = 0
        self.estimate = estimate  # seconds
        self.stamp = stamp  # clock() of the last update of `estimate`


class LoadBook:
    """In-flight counts and latency estimates of every endpoint the edge talks to."""

    def __init__(
        self,
        decay: float = 10.0,
        default_rtt: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self.decay = decay
        # A new endpoint starts at this estimate: not zero, or every new pod would take a
        # burst of traffic before its first answer (the "new endpoint stampede").
        self.default_rtt = default_rtt
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, EndpointLoad] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> EndpointLoad:
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self._max:
                self._prune()
            entry = EndpointLoad(self.default_rtt, self._clock())
            self._entries[key] = entry
        return entry

    def in_flight(self, key: str) -> int:
        entry = self._entries.get(key)
        return entry.inflight if entry is not None else 0

    def estimate(self, key: str) -> float:
        """The current latency estimate (decayed to now), seconds."""
        entry = self._entries.get(key)
        if entry is None:
            return self.default_rtt
        return decayed(entry.estimate, self._clock() - entry.stamp, self.decay)

    def cost(self, key: str) -> float:
        """What P2C compares: estimate * (in-flight + 1)."""
        entry = self._entries.get(key)
        if entry is None:
            return self.default_rtt
        est = decayed(entry.estimate, self._clock() - entry.stamp, self.decay)
        return est * (entry.inflight + 1)

    def begin(self, key: str) -> float:
        """A request goes to `key`; returns its start time for `end`."""
        self.get(key).inflight += 1
        return self._clock()

    def end(self, key: str, started: float, rtt: float | None = None) -> None:
        """The request is over; `rtt` (seconds to the response head, or to the failure)
        updates the estimate; None leaves it (e.g. the client went away first)."""
        entry = self.get(key)
        entry.inflight = max(0, entry.inflight - 1)
        if rtt is not None:
            now = self._clock()
            entry.estimate = observe(entry.estimate, now - entry.stamp, rtt, self.decay)
            entry.stamp = now

    def _prune(self) -> None:
        """Drop idle entries (no request in flight, no update for 30 decay periods)."""
        horizon = self._clock() - 30 * self.decay
        for key in [k for k, e in self._entries.items() if e.inflight == 0 and e.stamp < horizon]:
            del self._entries[key]

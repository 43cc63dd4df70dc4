"""Passive outlier detection: endpoints that keep failing requests are ejected for a while.

Envoy's consecutive-5xx detector, as a pure state machine over an injected clock:

- Every request outcome is recorded by endpoint key: `success`, `server_error` (a 5xx
  response head from the endpoint) or `gateway_failure` (connect failure, reset, protocol
  error, response timeout: Envoy's locally originated errors, which its default
  `split_external_local_origin_errors: false` counts together with 5xx).
- `consecutive_failures` failures in a row eject the endpoint. Any success resets the
  count. Outcomes recorded while an endpoint is ejected (requests already in flight, or
  sent in panic mode) are ignored: they neither extend nor end the ejection.
- The n-th ejection lasts `base_ejection * 2^(n-1)`, capped at `max_ejection` (Envoy grows
  it linearly; the issue asks for exponential growth, which backs off a flapping endpoint
  faster). n decays by one for every `base_ejection` the endpoint stays un-ejected (Envoy
  decrements its multiplier on each healthy interval), so an old incident is forgotten.
- At most `max_ejected_percent` of the backend's endpoints are ejected at once, rounded
  down, so a backend of one endpoint never ejects it (Envoy ejects at least one host
  regardless of the percentage and relies on panic mode; rounding down keeps the promise
  "never more than 50%" literally, and panic mode still covers active-check failures).
- An ejection ends by itself when its time is up (checked lazily on `ejected`), or early
  by `uneject` (the backend's owner calls it when an active check sees the endpoint
  recover, like Envoy's `successful_active_health_check_uneject_host`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from kedge.edge.config import OutlierDetectionConfig

__all__ = ["Outcome", "OutlierDetector", "OutlierState", "ejection_time"]


class Outcome(Enum):
    SUCCESS = "success"
    SERVER_ERROR = "server_error"  # a 5xx response head from the endpoint
    GATEWAY_FAILURE = "gateway_failure"  # connect failure, reset, timeout


def ejection_time(config: OutlierDetectionConfig, n: int) -> float:
    """How long the n-th ejection (n >= 1) lasts: base * 2^(n-1), capped."""
    # The exponent is bounded so a long-flapping endpoint cannot overflow the float.
    return min(config.base_ejection * 2.0 ** min(n - 1, 64), config.max_ejection)


@dataclass(slots=True)
class OutlierState:
    """One endpoint's passive-health bookkeeping (owned by the detector)."""

    failures: int = 0  # consecutive failures since the last success or ejection
    ejections: int = 0  # the multiplier n, before decay
    ejected_until: float = 0.0  # clock(); 0 = not ejected
    returned_at: float = 0.0  # when the last ejection ended (decay counts from here)


class OutlierDetector:
    """Consecutive-failure ejection for one backend's endpoints, keyed by endpoint key."""

    def __init__(self, config: OutlierDetectionConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._states: dict[str, OutlierState] = {}
        self._ejected: set[str] = set()  # keys whose ejection may still run (lazy expiry)
        self.changes = 0  # ejections started or ended so far (see EndpointHealth.generation)

    # -- the endpoint set --------------------------------------------------------------
    def set_endpoints(self, keys: Iterable[str]) -> None:
        """The backend's current endpoints: the base of the percentage cap. State of the
        ones that stay is kept; state of the ones gone is dropped."""
        live = set(keys)
        self._states = {k: self._states.get(k) or OutlierState() for k in sorted(live)}
        self._ejected &= live

    # -- outcomes ------------------------------------------------------------------------
    def record(self, key: str, outcome: Outcome) -> bool:
        """Record one request's outcome; True when this outcome ejected the endpoint."""
        state = self._states.get(key)
        if state is None or not self.config.enabled or self.ejected(key):
            return False  # unknown key (removed meanwhile), detection off, or ejected
        if outcome is Outcome.SUCCESS:
            state.failures = 0
            return False
        state.failures += 1
        if state.failures < self.config.consecutive_failures or not self._room_for_one_more():
            return False
        now = self._clock()
        state.failures = 0
        state.ejections = self._decayed(state, now) + 1
        state.ejected_until = now + ejection_time(self.config, state.ejections)
        self._ejected.add(key)
        self.changes += 1
        return True

    def _room_for_one_more(self) -> bool:
        cap = len(self._states) * self.config.max_ejected_percent // 100
        return self.ejected_count() + 1 <= cap

    def _decayed(self, state: OutlierState, now: float) -> int:
        """The multiplier after the decay of the time spent un-ejected since it returned."""
        if state.ejections == 0:
            return 0
        steps = math.floor((now - state.returned_at) / self.config.base_ejection)
        return max(0, state.ejections - max(0, steps))

    # -- queries -------------------------------------------------------------------------
    def ejected(self, key: str) -> bool:
        if key not in self._ejected:
            return False
        state = self._states[key]
        if self._clock() < state.ejected_until:
            return True
        self._return(key, state, state.ejected_until)
        return False

    def ejected_count(self) -> int:
        return sum(1 for key in list(self._ejected) if self.ejected(key))

    def has_ejections(self) -> bool:
        """Some ejection may still run (cheap: no clock read)."""
        return bool(self._ejected)

    def any_ejected(self) -> bool:
        return bool(self._ejected) and self.ejected_count() > 0

    def uneject(self, key: str) -> None:
        """End an ejection early (an active check saw the endpoint recover)."""
        if key in self._ejected:
            self._return(key, self._states[key], self._clock())

    def _return(self, key: str, state: OutlierState, at: float) -> None:
        self._ejected.discard(key)
        self.changes += 1
        state.ejected_until = 0.0
        state.returned_at = at
        state.failures = 0

    def state(self, key: str) -> OutlierState | None:
        return self._states.get(key)

    def remaining(self, key: str) -> float:
        """Seconds of ejection left (0 when not ejected)."""
        if not self.ejected(key):
            return 0.0
        return self._states[key].ejected_until - self._clock()

    def multiplier(self, key: str) -> int:
        """The n the next ejection would build on (after decay), for /status."""
        state = self._states.get(key)
        if state is None:
            return 0
        if self.ejected(key):
            return state.ejections
        return self._decayed(state, self._clock())

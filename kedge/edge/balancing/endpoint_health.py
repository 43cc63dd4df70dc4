"""A backend's view of endpoint health: active checks and outlier ejection, plus panic mode.

An endpoint is *available* when outlier detection has not ejected it and active checks
(when configured) do not find it unhealthy. Balancing uses `usable(ready, available)`:

Panic mode (Envoy's healthy_panic_threshold): when fewer than `panic_threshold` percent
of the ready endpoints are available, balancing ignores health and spreads traffic over
ALL ready endpoints. When most endpoints look bad, the likelier story is a problem of the
checks themselves (a broken health path, a shared dependency, the edge's own network),
and sending everything to the few endpoints still passing would overload them into
failing too, or, with none passing, fail every request although some might succeed.
`panic_threshold: 0` turns panic mode off (then no available endpoint means 503
`no-endpoints`). A backend in panic shows `"panic": true` in `/status`.

When an active check sees an endpoint recover (UNHEALTHY -> HEALTHY) while it is ejected,
the ejection ends at once, like Envoy's successful_active_health_check_uneject_host; an
endpoint that passes its checks but fails real requests stays ejected for its time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kedge.edge.balancing.health import HealthState, HealthStatus
from kedge.edge.balancing.outlier import Outcome, OutlierDetector
from kedge.edge.config import HealthCheckConfig, OutlierDetectionConfig
from kedge.edge.discovery.model import Endpoint

__all__ = ["EndpointHealth", "HealthHooks", "panicking", "usable"]


def _noop(*_args: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class HealthHooks:
    """Where health events go (metrics); every hook is optional."""

    ejected: Callable[[], None] = _noop  # an endpoint was ejected
    checked: Callable[[str], None] = _noop  # an active check ended: "success" | "failure"
    # Called once with a function that counts available endpoints (a gauge reads it).
    watch_available: Callable[[Callable[[], float]], None] = _noop


def panicking(
    endpoints: Sequence[Endpoint], available: Callable[[str], bool], panic_threshold: int = 50
) -> bool:
    """Fewer than `panic_threshold` percent of `endpoints` are available."""
    if not endpoints or panic_threshold <= 0:
        return False
    count = sum(1 for e in endpoints if available(e.key))
    return count * 100 < panic_threshold * len(endpoints)


def usable(
    endpoints: Sequence[Endpoint], available: Callable[[str], bool], panic_threshold: int = 50
) -> tuple[Endpoint, ...]:
    """The endpoints balancing may pick: the available ones, or all of them in panic."""
    chosen = tuple(e for e in endpoints if available(e.key))
    if len(chosen) == len(endpoints):
        return tuple(endpoints)
    if panic_threshold > 0 and len(chosen) * 100 < panic_threshold * len(endpoints):
        return tuple(endpoints)
    return chosen


class EndpointHealth:
    """Active-check states and outlier ejections of one backend's endpoints, by key."""

    def __init__(
        self,
        outlier: OutlierDetectionConfig,
        health_check: HealthCheckConfig | None = None,
        *,
        panic_threshold: int = 50,
        clock: Callable[[], float] = time.monotonic,
        hooks: HealthHooks | None = None,
    ) -> None:
        self.panic_threshold = panic_threshold
        self._check_config = health_check
        self._outlier = OutlierDetector(outlier, clock)
        self._hooks = hooks or HealthHooks()
        self._states: dict[str, HealthState] = {}
        self._unhealthy: set[str] = set()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._keys: frozenset[str] = frozenset()
        self._changes = 0
        self._hooks.watch_available(lambda: float(self.available_count()))

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """The backend's ready endpoints now; state of those that stay is kept."""
        self._endpoints = tuple(endpoints)
        self._keys = keys = frozenset(e.key for e in self._endpoints)
        self._outlier.set_endpoints(keys)
        self._states = {k: s for k, s in self._states.items() if k in keys}
        self._unhealthy &= keys
        self._changes += 1

    # -- inputs ----------------------------------------------------------------------------
    def record(self, key: str, outcome: Outcome) -> None:
        """One request's outcome on `key` (the forwarder calls this per attempt)."""
        if self._outlier.record(key, outcome):
            self._hooks.ejected()

    def checked(self, key: str, ok: bool, error: str | None = None) -> None:
        """One active check's result (the HealthChecker calls this)."""
        config = self._check_config
        if config is None or key not in self._keys:
            return
        self._hooks.checked("success" if ok else "failure")
        before = self._states.get(key, HealthState())
        after = before.observe(ok, config.healthy_threshold, config.unhealthy_threshold, error)
        self._states[key] = after
        if after.is_available != before.is_available:
            self._changes += 1
        if after.is_available:
            self._unhealthy.discard(key)
        else:
            self._unhealthy.add(key)
        if before.status is HealthStatus.UNHEALTHY and after.status is HealthStatus.HEALTHY:
            self._outlier.uneject(key)

    # -- queries ---------------------------------------------------------------------------
    def available(self, key: str) -> bool:
        return key not in self._unhealthy and not self._outlier.ejected(key)

    def all_available(self) -> bool:
        """Nothing unhealthy or ejected: the fast path of the request path."""
        return not self._unhealthy and not self._outlier.any_ejected()

    def generation(self) -> int:
        """Grows whenever an endpoint's availability may have changed (the endpoint set, an
        active-check verdict, an ejection starting or ending): state derived from
        `available` (locality tiers) is stale when this differs from when it was built."""
        if self._outlier.has_ejections():
            self._outlier.ejected_count()  # ends the ejections whose time is up
        return self._changes + self._outlier.changes

    def available_count(self) -> int:
        return sum(1 for e in self._endpoints if self.available(e.key))

    def usable(self, endpoints: Sequence[Endpoint]) -> tuple[Endpoint, ...]:
        if self.all_available():
            return tuple(endpoints)
        return usable(endpoints, self.available, self.panic_threshold)

    def panic(self) -> bool:
        return not self.all_available() and panicking(
            self._endpoints, self.available, self.panic_threshold
        )

    def status(self, key: str) -> dict[str, object]:
        """For /status: active health, ejection, and the failure runs behind them."""
        state = self._states.get(key)
        passive = self._outlier.state(key)
        return {
            "health": "unchecked"
            if self._check_config is None
            else (state.status.value if state else HealthStatus.UNKNOWN.value),
            "last_check_error": state.last_error if state else None,
            "ejected": self._outlier.ejected(key),
            "ejected_for_s": round(self._outlier.remaining(key), 3),
            "ejections": self._outlier.multiplier(key),
            "consecutive_failures": passive.failures if passive else 0,
        }

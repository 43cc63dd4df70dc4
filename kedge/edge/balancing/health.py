"""Active health checks: a pure per-endpoint state machine and the task that feeds it.

`HealthState` follows Envoy's thresholds: a healthy endpoint turns unhealthy after
`unhealthy_threshold` consecutive failed checks, an unhealthy one turns healthy after
`healthy_threshold` consecutive passes; a pass resets the failure run and vice versa.

The initial state is UNKNOWN, and UNKNOWN counts as available (healthy until proven
otherwise). Envoy instead starts a host as failing until its first check passes; that
suits endpoints nothing vouched for, but the edge's endpoints come from static config or
from Kubernetes readiness, which already vouch for them, and starting them unavailable
would put every backend into panic mode at each start and reload. Like Envoy at startup,
the first check decides at once: one pass makes an UNKNOWN endpoint HEALTHY, one failure
makes it UNHEALTHY (the thresholds damp flapping of an endpoint with a known state, not
the verdict on a new one), and a new endpoint is checked as soon as it appears.

`HealthChecker` is the I/O shell: one task per backend that probes every ready endpoint
every `interval` (plus up to 10% random jitter, so the checks of many edges and endpoints
spread out; Envoy's interval_jitter_percent), each probe bounded by `timeout`, and reports
each result to a callback. Endpoint sets from resolver updates are picked up at once:
removed endpoints' checks are cancelled, new ones checked right away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import Enum
from random import Random

from kedge.edge.balancing.health_probes import ProbeTarget, probe
from kedge.edge.config import HealthCheckConfig
from kedge.edge.discovery.model import Endpoint

__all__ = ["HealthChecker", "HealthState", "HealthStatus", "TargetFor"]

log = logging.getLogger("kedge.health")

_JITTER = 0.1  # each wait is interval * (1 + up to this)


class HealthStatus(Enum):
    UNKNOWN = "unknown"  # not checked yet: available
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class HealthState:
    status: HealthStatus = HealthStatus.UNKNOWN
    successes: int = 0  # consecutive passes
    failures: int = 0  # consecutive failures
    last_error: str | None = None  # why the last check failed (None after a pass)

    def observe(
        self, ok: bool, healthy_threshold: int, unhealthy_threshold: int, error: str | None = None
    ) -> HealthState:
        """The state after one check result."""
        if ok:
            successes = self.successes + 1
            status = self.status
            if status is HealthStatus.UNKNOWN or (
                status is HealthStatus.UNHEALTHY and successes >= healthy_threshold
            ):
                status = HealthStatus.HEALTHY
            return HealthState(status, successes, 0, None)
        failures = self.failures + 1
        status = self.status
        if status is HealthStatus.UNKNOWN or (
            status is HealthStatus.HEALTHY and failures >= unhealthy_threshold
        ):
            status = HealthStatus.UNHEALTHY
        return replace(self, status=status, successes=0, failures=failures, last_error=error)

    @property
    def is_available(self) -> bool:
        return self.status is not HealthStatus.UNHEALTHY


TargetFor = Callable[[Endpoint], ProbeTarget]


class HealthChecker:
    """Probes every endpoint of one backend on a jittered interval (one task)."""

    def __init__(
        self,
        config: HealthCheckConfig,
        target_for: TargetFor,
        on_result: Callable[[str, bool, str | None], None],
        *,
        name: str = "",
        rng: Random | None = None,
    ) -> None:
        self.config = config
        self._target_for = target_for
        self._on_result = on_result  # (endpoint key, passed, why it failed)
        self._name = name
        self._rng = rng or Random()
        self._endpoints: dict[str, Endpoint] = {}
        self._due: dict[str, float] = {}  # loop.time() of each endpoint's next check
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """The endpoints to check from now on; new ones are checked at once."""
        current = {e.key: e for e in endpoints}
        for key in [k for k in self._endpoints if k not in current]:
            self._due.pop(key, None)
            task = self._running.pop(key, None)
            if task is not None:
                task.cancel()
        for key in current:
            self._due.setdefault(key, 0.0)
        self._endpoints = current
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"kedge-health-{self._name}"
            )

    async def aclose(self) -> None:
        tasks = list(self._running.values())
        if self._task is not None:
            tasks.append(self._task)
            self._task = None
        self._running.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            for key, endpoint in self._endpoints.items():
                if key not in self._running and self._due.get(key, 0.0) <= now:
                    self._due[key] = math.inf  # until this check ends
                    self._running[key] = loop.create_task(self._check(endpoint))
            wait = min(self._due.values(), default=math.inf) - now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if math.isinf(wait) else max(wait, 0.0)):
                    await self._wake.wait()

    async def _check(self, endpoint: Endpoint) -> None:
        key = endpoint.key
        error: str | None = None
        try:
            async with asyncio.timeout(self.config.timeout):
                await probe(self.config.probe, self._target_for(endpoint))
        except TimeoutError:
            error = f"no answer within {self.config.timeout:g}s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure to connect or to answer well is a failed check
            error = str(exc) or type(exc).__name__
        if self._running.get(key) is not asyncio.current_task():
            return  # the endpoint was removed (and maybe re-added) meanwhile
        del self._running[key]
        loop = asyncio.get_running_loop()
        self._due[key] = loop.time() + self.config.interval * (1 + _JITTER * self._rng.random())
        self._wake.set()
        if error is not None:
            log.debug("health check of %s (%s) failed: %s", key, self._name, error)
        self._on_result(key, error is None, error)

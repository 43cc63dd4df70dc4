"""Backend: the live state of one configured backend (endpoints, load, pools, resolver task).

The resolver task folds updates into an immutable EndpointSet and swaps one reference; the
request path only reads it. Per-endpoint state (in-flight counts, pools) is keyed by the
endpoint's identity, so it survives endpoint-set updates and config reloads that keep the
backend unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Collection
from random import Random

from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import NoEndpoints
from kedge.core.net.dial import EndpointDialer
from kedge.core.net.h2_pool import H2EndpointPool
from kedge.core.net.tls import client_context
from kedge.edge.balancing.endpoint_health import EndpointHealth, HealthHooks
from kedge.edge.balancing.health import HealthChecker
from kedge.edge.balancing.health_probes import ProbeTarget
from kedge.edge.balancing.load import LoadBook
from kedge.edge.balancing.locality import Here, Tiers, pick_tier, tier_of
from kedge.edge.balancing.policies import p2c, round_robin
from kedge.edge.balancing.retry_budget import RetryBudget
from kedge.edge.config import BackendConfig, Balancer, LocalityConfig, UpstreamProtocol
from kedge.edge.discovery.model import Endpoint, EndpointSet, Resolver, Update
from kedge.edge.forwarding.pool import EndpointPool
from kedge.edge.forwarding.remote import RemoteClusters

__all__ = ["Backend"]

log = logging.getLogger("kedge.backend")


class Backend:
    def __init__(
        self,
        config: BackendConfig,
        resolver: Resolver,
        sweeper: DeadlineSweeper,
        *,
        max_response_header_bytes: int = 65536,
        rng: Random | None = None,
        on_change: Callable[[Backend], None] | None = None,
        on_connect: Callable[[], None] | None = None,
        loads: LoadBook | None = None,
        locality: LocalityConfig | None = None,
        health_hooks: HealthHooks | None = None,
    ) -> None:
        self._on_connect = on_connect
        # Shared by every backend of the edge (keyed by endpoint identity), so load and
        # latency estimates survive endpoint updates and reloads that rebuild this backend.
        self.loads = loads if loads is not None else LoadBook()
        self.locality = locality or LocalityConfig()
        self._here = Here(self.locality.cluster, self.locality.region, self.locality.zone)
        self.tiers: Tiers | None = None  # None: one tier (no locality known)
        self._tiers_generation = -1  # health generation the tiers were built at
        # Other clusters' edges serving this backend too (cross-cluster failover).
        self.remotes = RemoteClusters(config.remote_clusters if config.allow_cross_cluster else ())
        self._tiered = self._here.known or bool(self.remotes)
        retries = config.retries
        self.retry_budget = RetryBudget(retries.budget_percent, retries.budget_min_per_second)
        self.config = config
        self.name = config.name
        self._resolver = resolver
        self._sweeper = sweeper
        self._max_header_bytes = max_response_header_bytes
        self._rng = rng or Random()
        self._on_change = on_change
        self.endpoints = EndpointSet()
        self._ready: tuple[Endpoint, ...] = ()
        self.synced = False  # the resolver has published at least once
        self.pools: dict[str, EndpointPool | H2EndpointPool] = {}
        self._rr = 0
        self._task: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        tls = config.tls
        if tls is not None:
            self._ssl = client_context(
                ca_file=tls.ca_file,
                insecure_skip_verify=tls.insecure_skip_verify,
                cert_file=tls.cert_file,
                key_file=tls.key_file,
                alpn=("h2",) if config.protocol is UpstreamProtocol.H2 else ("http/1.1",),
            )
        # Active checks and outlier ejection of the ready endpoints (see endpoint_health).
        self.health = EndpointHealth(
            config.outlier_detection,
            config.health_check,
            panic_threshold=config.panic_threshold,
            hooks=health_hooks,
        )
        self._checker: HealthChecker | None = None
        if config.health_check is not None:
            self._checker = HealthChecker(
                config.health_check,
                self._probe_target,
                self.health.checked,
                name=self.name,
                rng=self._rng,
            )
        if self.remotes:
            self._set_ready(())  # remote edges serve before (or without) local endpoints

    # -- discovery ---------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run_resolver(), name=f"kedge-resolver-{self.name}"
            )
            if self._checker is not None:
                self._checker.start()

    async def _run_resolver(self) -> None:
        try:
            await self._resolver.run(self.apply)
        except asyncio.CancelledError:
            raise
        except Exception:  # a resolver bug must not kill the edge; keep the last set
            log.exception("resolver for backend %s stopped", self.name)

    def apply(self, update: Update) -> None:
        self.endpoints = self.endpoints.fold(update)
        local = self.endpoints.ready
        here = self._here
        if not self.config.allow_cross_cluster and here.cluster is not None:
            local = tuple(e for e in local if e.label("cluster") in (None, here.cluster))
        self._set_ready(local)
        self.synced = True
        live = {e.key for e in self.endpoints.endpoints}
        for key in [k for k in self.pools if k not in live]:
            self.pools.pop(key).close()
        if self._on_change is not None:
            self._on_change(self)

    def _set_ready(self, local: tuple[Endpoint, ...]) -> None:
        """Local ready endpoints plus the remote clusters' edges."""
        ready = local + self.remotes.endpoints
        self._ready = ready
        self.health.set_endpoints(ready)
        if self._checker is not None:
            # Active checks probe the backend's own endpoints; a remote edge is judged by
            # the requests sent to it (outlier detection).
            self._checker.set_endpoints(local)
        self._tiers_generation = -1

    # -- balancing -----------------------------------------------------------------------
    def _candidates(self, exclude: Collection[str], last: bool) -> tuple[Endpoint, ...]:
        """Where this request may go: the usable endpoints of the tier drawn by share (see
        locality), or of the nearest tier with an endpoint this request has not tried; all
        usable ones (with panic mode) when there is one tier or none is left."""
        health = self.health
        if self._tiered:
            generation = health.generation()
            if generation != self._tiers_generation:
                tiers = Tiers.build(
                    self._ready,
                    health.available,
                    self._here,
                    self.remotes.priority,
                    self.locality.healthy_capacity,
                )
                self.tiers = tiers if len(tiers.groups) > 1 else None
                self._tiers_generation = generation
            if self.tiers is not None:
                if last and exclude and (other := self.tiers.untried(exclude)):
                    return other
                tier = pick_tier(self.tiers, self._rng)
                if tier and not all(e.key in exclude for e in tier):
                    return tier
                # A retry whose tier is used up: the nearest tier with an untried endpoint
                # (so priorities hold for failover too).
                for group in self.tiers.groups:
                    if any(e.key not in exclude for e in group):
                        return group
        return health.usable(self._ready)

    def tier(self, endpoint: Endpoint) -> int:
        """The endpoint's locality tier (see locality.tier_of)."""
        return tier_of(endpoint, self._here, self.remotes.priority)

    def pick(self, exclude: Collection[str] = (), *, last: bool = False) -> Endpoint:
        """An endpoint for the next try; `exclude`: those this request tried already;
        `last`: the request's last try, which goes to a tier it has not tried if any."""
        ready = self._candidates(exclude, last)
        balancer = self.config.balancer
        if balancer is Balancer.P2C_EWMA:
            endpoint = p2c(ready, self.loads.cost, self._rng, exclude)
        elif balancer is Balancer.LEAST_REQUEST or balancer is Balancer.P2C:
            endpoint = p2c(ready, self.loads.in_flight, self._rng, exclude)
        else:
            self._rr += 1
            endpoint = round_robin(ready, self._rr, exclude)
        if endpoint is None:
            if not ready:
                raise NoEndpoints(f"backend {self.name} has no ready endpoints")
            raise NoEndpoints(f"backend {self.name}: every endpoint failed for this request")
        return endpoint

    def usable_endpoints(self) -> tuple[Endpoint, ...]:
        """The ready endpoints balancing may pick now: not ejected and not failing active
        checks, or all of them in panic mode (see endpoint_health)."""
        return self.health.usable(self._ready)

    def _reach(self, endpoint: Endpoint) -> tuple[UpstreamProtocol, EndpointDialer]:
        """How this backend talks to `endpoint`: a remote cluster's edge has its own TLS
        and protocol; the backend's own endpoints use the backend's."""
        remote = self.remotes.get(endpoint.key)
        if remote is not None:
            protocol, ctx = remote.config.protocol, remote.ssl_context
            server_name = remote.server_name(endpoint)
        else:
            tls = self.config.tls
            protocol, ctx = self.config.protocol, self._ssl
            server_name = tls.server_name if tls and tls.server_name else endpoint.address.host
        address = endpoint.address
        dialer = EndpointDialer(
            address.host,
            address.port,
            endpoint.key,
            self.config.timeouts.connect,
            ctx,
            server_name if ctx is not None else None,
        )
        return protocol, dialer

    def _probe_target(self, endpoint: Endpoint) -> ProbeTarget:
        protocol, dialer = self._reach(endpoint)
        return ProbeTarget(endpoint, protocol, dialer)

    def pool(self, endpoint: Endpoint) -> EndpointPool | H2EndpointPool:
        pool = self.pools.get(endpoint.key)
        if pool is None:
            protocol, dialer = self._reach(endpoint)
            cls = EndpointPool if protocol is UpstreamProtocol.HTTP1 else H2EndpointPool
            pool = cls(
                dialer,
                self.config.pool,
                self._sweeper,
                max_response_header_bytes=self._max_header_bytes,
                on_connect=self._on_connect,
            )
            self.pools[endpoint.key] = pool
        return pool

    # -- lifecycle ---------------------------------------------------------------------
    async def aclose(self) -> None:
        if self._checker is not None:
            await self._checker.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()

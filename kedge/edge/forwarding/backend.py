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
from kedge.core.net.tls import client_context
from kedge.edge.balancing.load import LoadBook
from kedge.edge.balancing.locality import Here, Tiers, pick_tier
from kedge.edge.balancing.policies import p2c, round_robin
from kedge.edge.config import BackendConfig, Balancer, LocalityConfig, UpstreamProtocol
from kedge.edge.discovery.model import Endpoint, EndpointSet, Resolver, Update
from kedge.edge.forwarding.h2_pool import H2EndpointPool
from kedge.edge.forwarding.pool import EndpointPool

__all__ = ["Backend"]

log = logging.getLogger("kedge.backend")


def _always(_key: str) -> bool:
    return True


def _one_remote_tier(_cluster: str) -> int:
    # Every other cluster in one tier, until backends list remote clusters with priorities.
    return 0


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
    ) -> None:
        self._on_connect = on_connect
        # Shared by every backend of the edge (keyed by endpoint identity), so load and
        # latency estimates survive endpoint updates and reloads that rebuild this backend.
        self.loads = loads if loads is not None else LoadBook()
        self.locality = locality or LocalityConfig()
        self._here = Here(self.locality.cluster, self.locality.region, self.locality.zone)
        self.tiers: Tiers | None = None  # None: one tier (no locality known)
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

    # -- discovery ---------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run_resolver(), name=f"kedge-resolver-{self.name}"
            )

    async def _run_resolver(self) -> None:
        try:
            await self._resolver.run(self.apply)
        except asyncio.CancelledError:
            raise
        except Exception:  # a resolver bug must not kill the edge; keep the last set
            log.exception("resolver for backend %s stopped", self.name)

    def apply(self, update: Update) -> None:
        self.endpoints = self.endpoints.fold(update)
        ready = self.endpoints.ready
        here = self._here
        if not self.config.allow_cross_cluster and here.cluster is not None:
            ready = tuple(e for e in ready if e.label("cluster") in (None, here.cluster))
        self._ready = ready
        self.tiers = None
        if here.known:
            tiers = Tiers.build(
                ready, _always, here, _one_remote_tier, self.locality.healthy_capacity
            )
            if len(tiers.groups) > 1:
                self.tiers = tiers
        self.synced = True
        live = {e.key for e in self.endpoints.endpoints}
        for key in [k for k in self.pools if k not in live]:
            self.pools.pop(key).close()
        if self._on_change is not None:
            self._on_change(self)

    # -- balancing -----------------------------------------------------------------------
    def pick(self, exclude: Collection[str] = ()) -> Endpoint:
        ready = self._ready
        if self.tiers is not None:
            # The nearest tier by share; a retry whose tier is used up goes to any tier.
            tier = pick_tier(self.tiers, self._rng)
            if tier and not all(e.key in exclude for e in tier):
                ready = tier
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

    def pool(self, endpoint: Endpoint) -> EndpointPool | H2EndpointPool:
        pool = self.pools.get(endpoint.key)
        if pool is None:
            tls = self.config.tls
            cls = EndpointPool if self.config.protocol is UpstreamProtocol.HTTP1 else H2EndpointPool
            pool = cls(
                endpoint.address,
                self.config.pool,
                self._sweeper,
                connect_timeout=self.config.timeouts.connect,
                ssl_context=self._ssl,
                server_hostname=(
                    tls.server_name if tls and tls.server_name else endpoint.address.host
                ),
                max_response_header_bytes=self._max_header_bytes,
                on_connect=self._on_connect,
            )
            self.pools[endpoint.key] = pool
        return pool

    # -- lifecycle ---------------------------------------------------------------------
    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()

"""DiscoveryRuntime: route discovery's life across reloads, and its merge into a config.

It starts, stops or restarts the `RouteDiscovery` watches to match each config, remembers
the Services last listed (so a restarted discovery that has not listed yet, e.g. during an
API outage, keeps their routes), merges the generated routes and backends after the file's,
and reports what it skipped (log once per problem, gauges, `/status`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from kedge.edge.config import EdgeConfig, KubernetesConfig
from kedge.edge.discovery.kubernetes.route_discovery import RouteDiscovery
from kedge.edge.discovery.kubernetes.runtime import KubeRuntime, without_discovery
from kedge.edge.discovery.kubernetes.services import Generated, generate
from kedge.edge.observability.access_log import AccessLog
from kedge.edge.observability.edge_metrics import EdgeMetrics

__all__ = ["DiscoveryRuntime"]

_NOTHING = Generated((), (), (), 0)


class DiscoveryRuntime:
    def __init__(
        self,
        kube: KubeRuntime,
        on_change: Callable[[], Awaitable[None]],
        metrics: EdgeMetrics,
        access_log: AccessLog,
    ) -> None:
        self._kube = kube
        self._on_change = on_change
        self._metrics = metrics
        self._log = access_log
        self.discovery: RouteDiscovery | None = None
        self._api: KubernetesConfig | None = None  # the API settings it watches with
        self._services: list[Mapping[str, Any]] | None = None  # the last listed
        self.report = _NOTHING

    @property
    def waiting_for_first_list(self) -> bool:
        return self.discovery is not None and not self.discovery.first_sync.is_set()

    def merge(self, config: EdgeConfig) -> EdgeConfig:
        """`config` plus the routes and backends generated from the Services listed."""
        d = config.kubernetes.discovery
        found = self.discovery
        if d is None or found is None:
            return config
        if found.synced:
            self._services = found.services()
        elif self._services is None:
            return config  # nothing listed yet
        # A discovery restarted by a reload (new namespaces or API settings) has not listed
        # yet: the Services last seen keep their routes meanwhile, or a second reload during
        # an API outage would withdraw them all.
        services = [
            s
            for s in self._services
            if not d.namespaces or (s.get("metadata") or {}).get("namespace") in d.namespaces
        ]
        generated = generate(services, d, config.routes, has_auth=config.auth is not None)
        self._report(generated)
        return replace(
            config,
            routes=config.routes + generated.routes,
            backends=config.backends + generated.backends,
        )

    def sync(self, config: EdgeConfig) -> RouteDiscovery | None:
        """Start, stop or restart discovery to match `config`; the discovery it stopped,
        if any, for the caller to close."""
        d = config.kubernetes.discovery
        stopped = None
        current = self.discovery
        if current is not None and (
            d is None or current.config != d or self._api != without_discovery(config.kubernetes)
        ):
            stopped, current, self.discovery = current, None, None
            if d is None:  # turned off: nothing is discovered now (gauges back to 0)
                self._services = None
                self._report(_NOTHING)
        if d is not None and current is None:
            self._api = without_discovery(config.kubernetes)
            self.discovery = RouteDiscovery(
                d, self._kube.watches_for(config.kubernetes), self._on_change
            )
            self.discovery.start()
        return stopped

    def _report(self, generated: Generated) -> None:
        before = {(p.service, p.message) for p in self.report.problems}
        for p in generated.problems:
            if (p.service, p.message) not in before:
                self._log.log_event(
                    "warning", "discovery skipped", service=p.service, kind=p.kind, reason=p.message
                )
        self.report = generated
        m = self._metrics
        m.discovered_routes.set(len(generated.routes))
        for kind in ("invalid", "conflict"):
            m.discovery_problems.labels(kind).set(sum(p.kind == kind for p in generated.problems))

    async def aclose(self) -> None:
        if self.discovery is not None:
            await self.discovery.aclose()
            self.discovery = None

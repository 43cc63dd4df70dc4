"""KubernetesResolver: a backend's endpoints from its Service's EndpointSlices."""

from __future__ import annotations

import asyncio

from kedge.edge.config import K8sResolverConfig
from kedge.edge.discovery.kubernetes.slices import endpoints_from_slices
from kedge.edge.discovery.kubernetes.watches import KubeWatches, Objects, Query
from kedge.edge.discovery.model import Endpoint, Publish, Reset

__all__ = ["KubernetesResolver", "slices_query"]


def slices_query(namespace: str, service: str) -> Query:
    """The EndpointSlices of one Service (the label the EndpointSlice controller sets)."""
    return Query(
        f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
        f"kubernetes.io/service-name={service}",
    )


class KubernetesResolver:
    """Publishes a `Reset` whenever the Service's endpoints for the port change.

    The list/watch behind it is shared with every other backend on the same Service.
    """

    def __init__(
        self, config: K8sResolverConfig, watches: KubeWatches, *, serve_terminating: bool
    ) -> None:
        self.config = config
        self._watches = watches
        self._serve_terminating = serve_terminating
        self._query = slices_query(config.namespace, config.service)

    @property
    def last_error(self) -> str | None:
        return self._watches.last_error(self._query)

    async def run(self, publish: Publish) -> None:
        last: tuple[Endpoint, ...] | None = None
        port = self.config.port

        def on_change(objects: Objects) -> None:
            nonlocal last
            endpoints = endpoints_from_slices(
                objects.values(), port, serve_terminating=self._serve_terminating
            )
            if endpoints != last:
                last = endpoints
                publish(Reset(endpoints))

        unsubscribe = self._watches.subscribe(self._query, on_change)
        try:
            await asyncio.Event().wait()
        finally:
            unsubscribe()

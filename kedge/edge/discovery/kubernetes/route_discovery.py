"""RouteDiscovery: the watches behind route discovery, and when their Services changed.

It subscribes to labelled Services (all namespaces, or each configured one) through the
shared watches and tells the app, after changes settle, that the set changed; the app
regenerates routes (`services.generate`) and swaps them in like a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from kedge.edge.config import DiscoveryConfig
from kedge.edge.discovery.kubernetes.watches import KubeWatches, Objects, Query

__all__ = ["RouteDiscovery", "services_queries"]


def services_queries(config: DiscoveryConfig) -> list[Query]:
    selector = f"{config.label_prefix}kedge-exposed"  # presence, any value (as kEdge)
    if not config.namespaces:
        return [Query("/api/v1/services", selector)]
    return [Query(f"/api/v1/namespaces/{ns}/services", selector) for ns in config.namespaces]


class RouteDiscovery:
    def __init__(
        self,
        config: DiscoveryConfig,
        watches: KubeWatches,
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self._watches = watches
        self._on_change = on_change
        self._queries = services_queries(config)
        self._objects: dict[Query, Objects] = {}
        self._unsubscribe: list[Callable[[], None]] = []
        self._pending: asyncio.Task[None] | None = None
        self.first_sync = asyncio.Event()

    @property
    def synced(self) -> bool:
        return len(self._objects) == len(self._queries)

    def services(self) -> list[Mapping[str, Any]]:
        return [svc for objects in self._objects.values() for svc in objects.values()]

    def start(self) -> None:
        for query in self._queries:
            self._unsubscribe.append(self._watches.subscribe(query, partial(self._changed, query)))

    def _changed(self, query: Query, objects: Objects) -> None:
        self._objects[query] = objects
        if self.synced and self._pending is None:
            # Settle: one rebuild for a burst of changes (a rollout touches many Services).
            self._pending = asyncio.get_running_loop().create_task(self._settle())

    async def _settle(self) -> None:
        await asyncio.sleep(self.config.settle)
        self._pending = None
        await self._on_change()
        self.first_sync.set()

    async def aclose(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending

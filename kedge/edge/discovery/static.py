"""StaticResolver: a backend whose endpoints are listed in the config, published once."""

from __future__ import annotations

import asyncio

from kedge.edge.config import StaticResolverConfig
from kedge.edge.discovery.model import Endpoint, Publish, Reset

__all__ = ["StaticResolver"]


class StaticResolver:
    """Publishes one `Reset` with the configured endpoints, then waits until cancelled.

    A config reload builds a new resolver, so the set never changes while this one runs.
    """

    def __init__(self, config: StaticResolverConfig) -> None:
        self.endpoints = tuple(
            Endpoint(address=e.address, labels=e.labels, weight=e.weight) for e in config.endpoints
        )
        # Same surface as the polling resolvers, for the admin endpoints; never set here.
        self.last_error: str | None = None

    async def run(self, publish: Publish) -> None:
        publish(Reset(self.endpoints))
        await asyncio.Event().wait()

"""make_resolver: the resolver for a backend's resolver config (static, DNS or SRV)."""

from __future__ import annotations

from typing import assert_never

from kedge.edge.config import (
    DnsResolverConfig,
    ResolverConfig,
    SrvResolverConfig,
    StaticResolverConfig,
)
from kedge.edge.discovery.dns import DnsResolver
from kedge.edge.discovery.model import Resolver
from kedge.edge.discovery.srv import SrvResolver
from kedge.edge.discovery.static import StaticResolver

__all__ = ["make_resolver"]


def make_resolver(config: ResolverConfig) -> Resolver:
    if isinstance(config, StaticResolverConfig):
        return StaticResolver(config)
    if isinstance(config, DnsResolverConfig):
        return DnsResolver(config)
    if isinstance(config, SrvResolverConfig):
        return SrvResolver(config)
    assert_never(config)

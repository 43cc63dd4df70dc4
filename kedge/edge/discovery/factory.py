"""make_resolver: the resolver for a backend's resolver config (static, DNS, SRV or k8s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from kedge.edge.config import (
    DnsResolverConfig,
    K8sResolverConfig,
    ResolverConfig,
    SrvResolverConfig,
    StaticResolverConfig,
)
from kedge.edge.discovery.dns import DnsResolver
from kedge.edge.discovery.kubernetes.resolver import KubernetesResolver
from kedge.edge.discovery.kubernetes.watches import KubeWatches
from kedge.edge.discovery.model import Resolver
from kedge.edge.discovery.srv import SrvResolver
from kedge.edge.discovery.static import StaticResolver

__all__ = ["make_resolver"]


def make_resolver(
    config: ResolverConfig,
    *,
    kube: Callable[[], KubeWatches] | None = None,
    serve_terminating: bool = False,
) -> Resolver:
    """`kube` gives the shared Kubernetes watches (started on first use)."""
    if isinstance(config, K8sResolverConfig):
        if kube is None:
            raise ValueError("a k8s resolver needs the Kubernetes API")
        return KubernetesResolver(config, kube(), serve_terminating=serve_terminating)
    if isinstance(config, StaticResolverConfig):
        return StaticResolver(config)
    if isinstance(config, DnsResolverConfig):
        return DnsResolver(config)
    if isinstance(config, SrvResolverConfig):
        return SrvResolver(config)
    assert_never(config)

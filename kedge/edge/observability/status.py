"""The admin `/status` document: a pure function of the edge's current state."""

from __future__ import annotations

from collections.abc import Mapping

from kedge.edge.discovery.kubernetes.services import Generated
from kedge.edge.forwarding.backend import Backend
from kedge.edge.state import EdgeState

__all__ = ["backend_status", "discovery_status", "edge_status"]


def backend_status(backend: Backend) -> dict[str, object]:
    """One backend: resolver sync, balancer, panic, and per endpoint its load, pool and
    health."""
    endpoints = []
    for e in backend.endpoints.endpoints + backend.remotes.endpoints:
        pool = backend.pools.get(e.key)
        endpoints.append(
            {
                "address": e.key,
                "ready": e.ready,
                "weight": e.weight,
                "labels": dict(e.labels),
                # 0 same zone, 1 same region, 2 same cluster, 3 + priority other clusters.
                "tier": backend.tier(e),
                "cluster": e.label("cluster"),
                "zone": e.label("zone"),
                "in_flight": backend.loads.in_flight(e.key),
                # The peak-EWMA latency estimate p2c_ewma balances on (decayed to now).
                "ewma_ms": round(backend.loads.estimate(e.key) * 1000, 3),
                "pool_idle": pool.idle_count if pool is not None else 0,
                "pool_open": pool.open_connections if pool is not None else 0,
                # health (active checks), ejected (outlier detection) and why.
                **backend.health.status(e.key),
            }
        )
    return {
        "synced": backend.synced,
        "balancer": backend.config.balancer.value,
        # Too few endpoints available: traffic goes to all ready ones (endpoint_health).
        "panic": backend.health.panic(),
        "endpoints": endpoints,
        "remote_clusters": [
            {
                "name": c.name,
                "priority": c.priority,
                "weight": c.weight,
                "endpoints": [str(a) for a in c.endpoints],
                # Its state: how many of its edge's addresses may take traffic now.
                "available": sum(backend.health.available(str(a)) for a in c.endpoints),
            }
            for c in backend.config.remote_clusters
        ],
    }


def edge_status(
    state: EdgeState,
    *,
    draining: bool,
    listeners: Mapping[str, int],
    connections: int,
    kubernetes_watches: list[dict[str, object]] | None = None,
    discovery: dict[str, object] | None = None,
) -> dict[str, object]:
    return {
        "generation": state.generation,
        "config": state.config.source,
        "draining": draining,
        "routes": len(state.config.routes),
        "listeners": dict(listeners),
        "connections": connections,
        "backends": {name: backend_status(b) for name, b in state.backends.items()},
        "issuers": _issuers(state),
        # Each shared list/watch: its query, subscribers, objects held, list and watch
        # requests made, and the last error (the state keeps serving through errors).
        "kubernetes_watches": kubernetes_watches or [],
        "discovery": discovery,
    }


def discovery_status(generated: Generated) -> dict[str, object]:
    """Route discovery: Services published, routes made, and every Service or port it
    skipped, with the reason (one bad Service never holds up the others)."""
    return {
        "services": generated.services,
        "routes": [r.name for r in generated.routes],
        "problems": [
            {"service": p.service, "kind": p.kind, "message": p.message} for p in generated.problems
        ],
    }


def _issuers(state: EdgeState) -> dict[str, object]:
    """Each OIDC issuer's key set: kids, age, fetch attempts and the last fetch error."""
    verifier = state.auth.verifier if state.auth is not None else None
    if verifier is None:
        return {}
    return {s.issuer.name: s.status() for s in verifier.sources.values()}

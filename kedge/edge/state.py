"""EdgeState: one immutable snapshot of what a request needs (config, route table, backends).

A reload builds a new EdgeState and the app swaps one reference; an exchange reads the
reference once and keeps that snapshot to its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kedge.edge.auth.gate import AuthGate
from kedge.edge.config import EdgeConfig
from kedge.edge.forwarding.backend import Backend
from kedge.edge.routing.table import RouteTable

__all__ = ["EdgeState"]


@dataclass(frozen=True, slots=True)
class EdgeState:
    config: EdgeConfig
    generation: int
    table: RouteTable
    backends: Mapping[str, Backend]
    auth: AuthGate | None = None  # None: no listener or route needs the auth layer

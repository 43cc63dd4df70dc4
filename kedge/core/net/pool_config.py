"""How many pooled connections to keep per endpoint, and for how long (edge and winch)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PoolConfig"]


@dataclass(frozen=True, slots=True)
class PoolConfig:
    max_idle_per_endpoint: int = 64  # idle keep-alive connections kept per endpoint
    idle_timeout: float = 60.0  # an idle pooled connection is closed after this
    max_connections_per_endpoint: int = 0  # 0 = no limit

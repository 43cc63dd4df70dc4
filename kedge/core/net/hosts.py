"""Facts about host names and addresses that policy depends on."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """`localhost`, or an IP literal in 127.0.0.0/8 or ::1 (brackets already removed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

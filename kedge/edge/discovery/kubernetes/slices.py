"""EndpointSlices to endpoints: a pure merge of every slice of a Service, for one port.

All slices and all their endpoints count (kEdge kept the first Endpoints subset and lost
pods in the others). The port is looked up in each slice: slices of one Service may list
different port numbers for the same name during a rollout. Conditions follow the API's
rules (discovery.k8s.io/v1): `ready` or `serving` left out means true, `terminating` left out
means false. Only ready endpoints serve; when none is ready and `serve_terminating` is on,
serving-but-terminating ones do (as kube-proxy's fallback, KEP-1669). Endpoints carry their
`zone` and `node` as labels for locality.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kedge.edge.config import Address
from kedge.edge.discovery.model import Endpoint

__all__ = ["endpoints_from_slices", "slice_port"]

_ADDRESS_TYPES = frozenset({"IPv4", "IPv6"})  # FQDN slices name hosts, not addresses


def slice_port(slice_: Mapping[str, Any], port: int | str) -> int | None:
    """The port number this slice serves for `port` (a number or a name), if any."""
    ports = slice_.get("ports") or []
    for p in ports:
        if not isinstance(p, dict) or p.get("protocol", "TCP") != "TCP":
            continue
        number = p.get("port")
        if not isinstance(number, int):
            continue
        if isinstance(port, int):
            if number == port:
                return number
        elif p.get("name", "") == port:
            return number
    return None


def _condition(conditions: Mapping[str, Any], name: str, default: bool) -> bool:
    value = conditions.get(name)
    return default if value is None else bool(value)


def endpoints_from_slices(
    slices: Iterable[Mapping[str, Any]], port: int | str, *, serve_terminating: bool = False
) -> tuple[Endpoint, ...]:
    ready: dict[str, Endpoint] = {}
    terminating: dict[str, Endpoint] = {}
    for s in slices:
        if s.get("addressType") not in _ADDRESS_TYPES:
            continue
        number = slice_port(s, port)
        if number is None:
            continue
        for ep in s.get("endpoints") or []:
            if not isinstance(ep, dict):
                continue
            conditions = ep.get("conditions") or {}
            is_ready = _condition(conditions, "ready", True)
            serving = _condition(conditions, "serving", True)
            is_terminating = _condition(conditions, "terminating", False)
            labels = []
            if isinstance(zone := ep.get("zone"), str):
                labels.append(("zone", zone))
            if isinstance(node := ep.get("nodeName"), str):
                labels.append(("node", node))
            for address in ep.get("addresses") or []:
                if not isinstance(address, str):
                    continue
                endpoint = Endpoint(Address(address, number), tuple(sorted(labels)))
                if is_ready:
                    ready[endpoint.key] = endpoint
                elif serving and is_terminating:
                    terminating[endpoint.key] = endpoint
    if ready or not serve_terminating:
        return tuple(ready[k] for k in sorted(ready))
    return tuple(terminating[k] for k in sorted(terminating))

"""The header fields a forwarded request carries upstream, for either upstream protocol.

The client's headers rewritten for the next hop (hop-by-hop removal, the edge's forwarding
headers), then what the edge adds after the rewrite so no client copy can survive: the
auth layer's identity header, and `hop` fields meant for one endpoint only (a remote
edge's credential).
"""

from __future__ import annotations

from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import forward_request_headers
from kedge.core.http.messages import Headers

__all__ = ["upstream_headers"]


def upstream_headers(ex: Exchange, hop: Headers | None, *, upgrade: bytes | None) -> Headers:
    h = ex.head
    headers = forward_request_headers(
        h.headers,
        client_ip=ex.client_ip,
        proto=ex.client_scheme,
        authority=h.authority,
        request_id=ex.request_id,
        upgrade=upgrade,
        version=h.version,
    )
    if ex.edge_headers:
        headers += ex.edge_headers
    if hop:
        headers += hop
    return headers

"""Who may use winch, and for what: the pure admission rules run before any mapping.

Winch attaches real credentials, so it must not become a relay for web pages or for other
local users (hardening §2.11):
- X1 DNS rebinding: a page on `evil.test` whose name now resolves to 127.0.0.1 sends
  `Host: evil.test:8070`. Winch serves itself only to loopback Host names, and proxies
  origin-form requests only for names the mapper maps; anything else is refused.
- X2 cross-site requests: browsers mark them with `Sec-Fetch-Site` (Fetch Metadata) and
  `Origin` (RFC 6454). A request another site's page made is refused; a same-origin one
  (the service's own page posting to itself) passes. Winch never answers with CORS headers,
  so a preflight (an OPTIONS with `Access-Control-Request-Method`) is refused too.
- X3 other local users: with `secret_file`, every proxied request must carry the secret as
  the proxy password (`http://any:SECRET@127.0.0.1:8070` in HTTP_PROXY gives
  `Proxy-Authorization: Basic`) or as a Bearer token; compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from kedge.core.http.messages import RequestHead, header_value
from winch.config import is_loopback_host
from winch.errors import CrossSiteRefused, HostNotAllowed, WinchSecretRequired

__all__ = ["Admission", "Verdict", "admit", "is_secret_valid"]


class Verdict(Enum):
    LOCAL = "local"  # winch's own pages: PAC, health
    PROXY = "proxy"  # map and forward (or tunnel, for CONNECT)


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    host: str  # the service's host (PROXY), or winch's own name (LOCAL)
    port: int


def is_secret_valid(proxy_authorization: bytes | None, secret: str) -> bool:
    """`Basic base64(user:SECRET)` (any user) or `Bearer SECRET` (RFC 9110 §11.7.2)."""
    if proxy_authorization is None:
        return False
    scheme, _, rest = proxy_authorization.strip().partition(b" ")
    scheme = scheme.lower()
    presented: bytes | None = None
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        presented = decoded.partition(b":")[2]
    elif scheme == b"bearer":
        presented = rest.strip()
    if presented is None:
        return False
    return hmac.compare_digest(presented, secret.encode("utf-8"))


def _origin_matches(origin: bytes, head: RequestHead) -> bool:
    """Origin `scheme://host[:port]` names the request's own service (same-origin)."""
    text = origin.decode("latin-1").strip().lower()
    scheme, sep, rest = text.partition("://")
    if not sep or "/" in rest:
        return False
    host, _, port_text = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    default = 443 if scheme == "https" else 80
    try:
        port = int(port_text) if port_text else default
    except ValueError:
        return False
    return host == head.host.lower() and port == head.port


def _check_cross_site(head: RequestHead) -> None:
    site = header_value(head.headers, b"sec-fetch-site")
    if site is not None and site.strip().lower() in (b"cross-site", b"same-site"):
        raise CrossSiteRefused(
            "refused: another site's page made this request (Sec-Fetch-Site), and winch "
            "attaches your credentials"
        )
    origin = header_value(head.headers, b"origin")
    if origin is not None and not _origin_matches(origin, head):
        raise CrossSiteRefused(
            "refused: the request's Origin is another site, and winch attaches your credentials"
        )
    if (
        head.method == "OPTIONS"
        and header_value(head.headers, b"access-control-request-method") is not None
    ):
        raise CrossSiteRefused("refused: winch does not do CORS")


def admit(
    head: RequestHead,
    *,
    own_port: int,
    is_mapped: Callable[[str], bool],
    secret: str | None,
) -> Admission:
    """Decide what a request is (winch's own page, or something to proxy); raise a typed
    refusal otherwise. `is_mapped(host)` says whether the mapper knows a name."""
    proxied = head.absolute_form or head.method == "CONNECT"
    if not proxied and is_loopback_host(head.host):
        if head.port != own_port:
            raise HostNotAllowed(f"refused: {head.authority} is not this winch")
        return Admission(Verdict.LOCAL, head.host, head.port)
    if not proxied and not is_mapped(head.host):
        # Origin-form for a name winch does not map: a rebinding page, or a client that
        # was not told to use winch as a proxy. Either way, not winch's to serve.
        raise HostNotAllowed(
            f"refused: {head.host} is neither this winch nor a name it maps "
            "(use winch as an HTTP proxy, or add a route for the name)"
        )
    _check_cross_site(head)
    if secret is not None and not is_secret_valid(
        header_value(head.headers, b"proxy-authorization"), secret
    ):
        raise WinchSecretRequired(
            "this winch requires its secret as the proxy password "
            "(HTTP_PROXY=http://me:SECRET@127.0.0.1:PORT)"
        )
    return Admission(Verdict.PROXY, head.host, head.port)

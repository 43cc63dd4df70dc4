"""Winch's own pages, served only to loopback Host names: the PAC file, a health check and
the Prometheus metrics.

The PAC file (Netscape's proxy auto-config; WPAD serves the same file as /wpad.dat) is
rendered from the mapper by kedge.dialer.pac, so browsers send exactly the mapped names to
winch and everything else DIRECT. It is `application/x-ns-proxy-autoconfig`, and never
cached for long: routes change on a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from kedge.core.errors import MethodNotAllowed, NoRoute
from kedge.core.http.exchange import Exchange
from kedge.core.http.messages import ResponseHead

__all__ = ["LocalPages"]


class LocalPages:
    def __init__(self, pac: str, metrics: Callable[[], bytes] | None = None) -> None:
        self._pac = pac.encode("utf-8")
        self._metrics = metrics

    async def serve(self, ex: Exchange) -> None:
        path = ex.head.path
        if path in ("/wpad.dat", "/proxy.pac"):
            body, ctype = self._pac, b"application/x-ns-proxy-autoconfig"
        elif path == "/healthz":
            body, ctype = b"ok\n", b"text/plain; charset=utf-8"
        elif path == "/metrics" and self._metrics is not None:
            body, ctype = self._metrics(), b"text/plain; version=0.0.4; charset=utf-8"
        else:
            raise NoRoute(f"winch serves /proxy.pac, /wpad.dat, /healthz and /metrics, not {path}")
        if ex.head.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{ex.head.method} is not allowed here; use GET")
        ex.route = "winch"
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
        ]
        if ex.head.method == "HEAD":
            ex.respond(ResponseHead(200, headers), len(body), has_body=False)
            ex.end()
            return
        ex.respond(ResponseHead(200, headers), len(body))
        await ex.send_last(body)

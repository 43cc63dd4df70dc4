"""`unmapped: direct` for plain HTTP: a name no route maps goes to the name itself.

Nothing is attached: no credential of any source ever goes to a name the mapper did not
map (hardening X5), and the client's own Proxy-Authorization (winch's secret) is dropped
like every hop-by-hop field. Redirects are passed back, never followed. This is a
convenience for a browser pointed at winch for everything; the default is `refuse`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from kedge.core.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from kedge.core.http.body import BodyStream
from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import forward_response_headers
from kedge.core.http.messages import Headers, ResponseHead
from winch.request_fields import client_fields

__all__ = ["DirectForwarder"]

# Besides what winch never passes on: aiohttp frames the body itself, and the edge debug tag
# means nothing to a name no edge serves.
_NOT_SENT = frozenset({b"content-length", b"x-kedge-debug"})


async def _chunks(body: BodyStream) -> AsyncIterator[bytes]:
    async for data in body.within(0):
        yield data


class DirectForwarder:
    def __init__(self, *, connect_timeout: float, response_header_timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=connect_timeout,
            sock_read=response_header_timeout or None,
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,  # the client asked for the encoding; pass bytes as is
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
                trust_env=False,  # winch is the proxy: never chain to HTTP_PROXY
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def forward(self, ex: Exchange) -> None:
        h = ex.head
        if h.scheme != "http":
            raise UpstreamProtocolError(f"winch sends only http:// directly, not {h.scheme}://")
        ex.route = "direct"
        ex.backend = h.authority
        headers = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in client_fields(h, drop_authorization=False)
            if n not in _NOT_SENT
        ]
        headers.append(("Host", h.authority))
        headers.append(("X-Request-Id", ex.request_id.decode("latin-1")))
        url = f"http://{h.authority}{h.path_and_query}"
        body = _chunks(ex.body) if ex.body is not None else None
        try:
            async with self._client().request(
                h.method, url, headers=headers, data=body, allow_redirects=False
            ) as resp:
                raw: Headers = [(n.lower(), v) for n, v in resp.raw_headers]
                has_body = h.method != "HEAD" and resp.status not in (204, 304)
                length = resp.content_length if has_body else None
                ex.respond(
                    ResponseHead(
                        resp.status,
                        forward_response_headers(raw, request_id=ex.request_id),
                        (resp.reason or "").encode("latin-1", "replace"),
                    ),
                    length,
                    has_body,
                )
                if has_body:
                    async for data in resp.content.iter_any():
                        await ex.send_body(data)
                ex.end()
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectError(f"connect to {h.authority} failed: {exc.os_error}") from None
        except TimeoutError:
            raise UpstreamTimeout(f"{h.authority} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"{h.authority}: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

"""A small Kubernetes API client: list and watch over aiohttp, nothing else.

The edge needs two calls (list, then watch from the list's resourceVersion) on two kinds;
a generated client would bring thousands of classes for that. Watch events arrive as
newline-delimited JSON over a chunked response (API concepts, "Efficient detection of
changes"); an ERROR event with code 410 means the resourceVersion is too old and the caller
must list again. Credentials come from a `Credentials` object, asked again after a 401
(a rotated service-account token, an expired exec-plugin token).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp

__all__ = ["Credentials", "Expired", "KubeApi", "KubeApiError"]

_MAX_LINE = 16 * 1024 * 1024  # one watch event (a big EndpointSlice is ~100 KiB)


class KubeApiError(Exception):
    """The API server refused or failed a request; `status` is the HTTP or Status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Expired(KubeApiError):
    """410 Gone / Expired: the resourceVersion is no longer available; list again."""


class Credentials(Protocol):
    """Where the API server is and how to authenticate to it."""

    @property
    def server(self) -> str: ...
    def ssl_context(self) -> ssl.SSLContext | None: ...
    async def headers(self) -> Mapping[str, str]: ...
    async def refresh(self) -> None:
        """Called after a 401: load fresh credentials (re-read a token, re-run a plugin)."""
        ...


def _status_message(body: object) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or body)[:300]
    return str(body)[:300]


class KubeApi:
    def __init__(self, credentials: Credentials, *, connect_timeout: float = 10.0) -> None:
        self._credentials = credentials
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # for /status

    def _session_for(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ctx = self._credentials.ssl_context()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx if ctx is not None else False),
                headers={"accept": "application/json", "user-agent": "kedge"},
            )
        return self._session

    async def _get(
        self, path: str, params: Mapping[str, str], limits: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        for attempt in range(2):
            self.requests += 1
            headers = await self._credentials.headers()  # first: it may load the credentials
            resp = await self._session_for().get(
                self._credentials.server.rstrip("/") + path,
                params=params,
                headers=headers,
                timeout=limits,
                allow_redirects=False,
            )
            if resp.status == 401 and attempt == 0:
                resp.release()
                await self._credentials.refresh()
                if self._session is not None:  # a refreshed client certificate, too
                    await self._session.close()
                    self._session = None
                continue
            if resp.status != 200:
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ClientError):
                    body = await resp.text()
                finally:
                    resp.release()
                error = Expired if resp.status == 410 else KubeApiError
                raise error(resp.status, _status_message(body))
            return resp
        raise AssertionError("unreachable")

    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=60, connect=self._connect_timeout)
        resp = await self._get(path, params, timeout)
        async with resp:
            body = await resp.json(content_type=None)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise KubeApiError(200, "a list response without items")
        return body

    async def watch(
        self, path: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request until the server ends it (timeoutSeconds).

        Raises Expired for a 410 (as a status or an ERROR event), KubeApiError for other
        ERROR events, and aiohttp/OS errors when the stream breaks."""
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._connect_timeout, sock_read=read_timeout
        )
        resp = await self._get(path, {**params, "watch": "true"}, timeout)
        async with resp:
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while (newline := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:newline])
                    del buffer[: newline + 1]
                    if line.strip():
                        yield _event(line)
                if len(buffer) > _MAX_LINE:
                    raise KubeApiError(200, "a watch event larger than 16 MiB")
            if buffer.strip():
                yield _event(bytes(buffer))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise KubeApiError(200, "a watch line that is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise KubeApiError(200, "a watch event without an object")
    if event.get("type") == "ERROR":
        status = event["object"]
        code = status.get("code")
        error = Expired if code == 410 else KubeApiError
        raise error(code if isinstance(code, int) else 500, _status_message(status))
    return event

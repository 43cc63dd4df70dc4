"""OAuth 2.0 / OpenID Connect client plumbing shared by the token-issuing auth sources.

Discovery (OpenID Connect Discovery 1.0) and token endpoint requests (RFC 6749 §3.2, §5)
over one aiohttp session per source, with a timeout and a cap on answer sizes. Errors become
AuthSourceError naming the source; an OAuth error answer (RFC 6749 §5.2) becomes
TokenEndpointError carrying its `error` code, so callers can tell `invalid_grant` (log in
again) from an outage (try again later).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from kedge.dialer.credentials import AuthSourceError, BearerToken, unverified_jwt_expiry

__all__ = [
    "OAuthClient",
    "ProviderMetadata",
    "TokenEndpointError",
    "basic_auth",
    "bearer_from_answer",
    "read_secret_file",
]

MAX_ANSWER_BYTES = 1 << 20
# RFC 6749 §5.2: error and error_description are limited to these printable characters.
_SAFE_TEXT = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,120}")


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of a provider's discovery document the sources use."""

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None


class TokenEndpointError(AuthSourceError):
    """The token endpoint answered an OAuth error (RFC 6749 §5.2), e.g. `invalid_grant`."""

    def __init__(self, source: str, reason: str, error: str) -> None:
        super().__init__(source, reason)
        self.error = error


def basic_auth(client_id: str, secret: str) -> str:
    """HTTP Basic client authentication; RFC 6749 §2.3.1 form-encodes id and secret first."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class OAuthClient:
    """Discovery and token requests for one source against one issuer."""

    __slots__ = ("_http", "_max_bytes", "_metadata", "_timeout", "issuer", "source")

    def __init__(
        self,
        source: str,
        issuer: str,
        *,
        timeout: float = 10.0,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.source = source
        self.issuer = issuer.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes
        self._metadata: ProviderMetadata | None = None
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, and only by a source that needs it.
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def metadata(self) -> ProviderMetadata:
        """The discovery document, fetched once (a failure is retried on the next call)."""
        if self._metadata is not None:
            return self._metadata
        url = f"{self.issuer}/.well-known/openid-configuration"
        status, doc = await self._request("GET", url, None, {})
        if status != 200:
            raise AuthSourceError(self.source, f"discovery {url} answered HTTP {status}")
        # OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for,
        # or a compromised document could send the refresh token elsewhere.
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
            raise AuthSourceError(
                self.source, f"discovery at {url} names another issuer; check `issuer`"
            )
        token_endpoint = doc.get("token_endpoint")
        if not isinstance(token_endpoint, str) or not token_endpoint:
            raise AuthSourceError(self.source, f"discovery at {url} has no token_endpoint")
        auth = doc.get("authorization_endpoint")
        self._metadata = ProviderMetadata(
            issuer=self.issuer,
            token_endpoint=token_endpoint,
            authorization_endpoint=auth if isinstance(auth, str) else None,
        )
        return self._metadata

    async def token(
        self, form: Mapping[str, str], *, client_id: str, client_secret: str | None
    ) -> dict[str, Any]:
        """POST a grant to the token endpoint; the 200 JSON answer, or an error."""
        endpoint = (await self.metadata()).token_endpoint
        body = dict(form)
        headers = {"Accept": "application/json"}
        if client_secret is not None:
            headers["Authorization"] = basic_auth(client_id, client_secret)
        else:
            body["client_id"] = client_id  # a public client identifies itself (RFC 6749 §3.2.1)
        status, answer = await self._request("POST", endpoint, body, headers)
        if status == 200:
            return answer
        error = _safe(answer.get("error")) or ""
        reason = f"token endpoint answered HTTP {status}"
        if error:
            reason += f" {error}"
            description = _safe(answer.get("error_description"))
            if description:
                reason += f" ({description})"
        raise TokenEndpointError(self.source, reason, error)

    async def _request(
        self, method: str, url: str, form: Mapping[str, str] | None, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        try:
            async with self._session().request(
                method, url, data=form, headers=headers, allow_redirects=False
            ) as resp:
                raw = await self._read_capped(resp)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AuthSourceError(self.source, f"{url} unreachable ({type(exc).__name__})") from exc
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            if status == 200:
                raise AuthSourceError(self.source, f"{url} answered something other than JSON")
            doc = {}
        return status, doc

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        if resp.content_length is not None and resp.content_length > self._max_bytes:
            raise AuthSourceError(self.source, f"{resp.url} answer over {self._max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self._max_bytes:
                raise AuthSourceError(
                    self.source, f"{resp.url} answer over {self._max_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _safe(value: object) -> str | None:
    """An OAuth error field fit for a log line, or None if absent or outside RFC 6749's set."""
    if isinstance(value, str) and _SAFE_TEXT.fullmatch(value):
        return value
    return None


def bearer_from_answer(
    source: str, answer: Mapping[str, Any], token_field: str, now: float
) -> BearerToken:
    """The bearer token in a token answer: `id_token` or `access_token`. Its expiry is the
    JWT's `exp` when it is one (read unverified), else `expires_in` (RFC 6749 §5.1), which
    describes the access token only."""
    value = answer.get(token_field)
    if not isinstance(value, str) or not value:
        raise AuthSourceError(source, f"the token endpoint's answer has no {token_field}")
    expires_at = unverified_jwt_expiry(value)
    expires_in = answer.get("expires_in")
    if expires_at is None and token_field == "access_token" and isinstance(expires_in, int):
        expires_at = now + expires_in
    return BearerToken(value, expires_at)


def read_secret_file(source: str, path: str) -> str:
    """A client secret from its file (stripped); read at each use so rotation needs no restart."""
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthSourceError(
            source, f"cannot read client secret file {path}: {type(exc).__name__}"
        ) from exc
    if not secret:
        raise AuthSourceError(source, f"client secret file {path} is empty")
    return secret

"""Credentials and auth sources: what a route sends, and the cache that refreshes it in time.

An auth source (a static token, a kubeconfig user, an OIDC login, a service account) yields a
`Credential`: a bearer token for `Authorization`/`Proxy-Authorization`, or a client certificate
for mTLS. `RefreshingCredential` is the cache every expiring source shares: it refreshes before
expiry, runs at most one refresh at a time (concurrent callers await the same one), and backs
off after a failure instead of hammering a token endpoint that is down.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from kedge.core.errors import CredentialUnavailable

__all__ = [
    "AuthSource",
    "AuthSourceError",
    "BearerToken",
    "ClientCertificate",
    "Clock",
    "Credential",
    "RefreshingCredential",
    "refresh_deadline",
    "stored_jwt_is_fresh",
    "unverified_jwt_claims",
    "unverified_jwt_expiry",
]

_log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class BearerToken:
    """An OAuth 2.0 bearer token (RFC 6750); `expires_at` in time.time() seconds, or None."""

    value: str = field(repr=False)
    expires_at: float | None = None

    def header_value(self) -> str:
        return f"Bearer {self.value}"


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate and its private key (PEM), for mTLS; expires with the certificate."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    expires_at: float | None = None


Credential = BearerToken | ClientCertificate


class AuthSourceError(CredentialUnavailable):
    """A source could not produce a credential. The reason is one line naming the source and
    the fix; it never contains a token (sources build it from their own words, not from
    server answers that could echo one)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"auth source {source!r}: {reason}")
        self.source = source


class AuthSource(Protocol):
    """What routes hold: a named, cached, refreshing credential."""

    name: str

    async def credential(self) -> Credential:
        """The current credential, refreshed before it expires; AuthSourceError if none."""
        ...

    def invalidate(self) -> None:
        """The edge refused the credential (401): drop it and fetch a new one next time."""
        ...

    async def aclose(self) -> None: ...


def refresh_deadline(fetched_at: float, expires_at: float | None, margin: float) -> float:
    """When to refresh a credential fetched at `fetched_at`: `margin` before expiry or at 80%
    of its lifetime, whichever comes first. The margin is capped at half the lifetime, so a
    token shorter than twice the margin is still used for half its life rather than fetched
    again on every call."""
    if expires_at is None:
        return math.inf
    lifetime = max(0.0, expires_at - fetched_at)
    lead = max(min(margin, lifetime / 2), lifetime * 0.2)
    return expires_at - lead


def unverified_jwt_claims(token: str) -> dict[str, object] | None:
    """A JWT's claims, read WITHOUT verifying the signature: the edge verifies; the dialer
    only schedules refreshes and checks the login nonce. None for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def unverified_jwt_expiry(token: str) -> float | None:
    """A JWT's `exp` (unverified, see above); None for an opaque token or one without `exp`."""
    exp = (unverified_jwt_claims(token) or {}).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def stored_jwt_is_fresh(token: BearerToken, now: float, margin: float) -> bool:
    """Whether a token found on disk (an OIDC cache, a kubeconfig id-token) may be used as is:
    before the refresh deadline computed from its own `iat` and `exp`, as if fetched at `iat`.
    Without `iat`, before `exp` less the margin; without `exp`, never (refresh to learn it)."""
    if token.expires_at is None:
        return False
    iat = (unverified_jwt_claims(token.value) or {}).get("iat")
    if isinstance(iat, int | float) and not isinstance(iat, bool):
        return now < refresh_deadline(float(iat), token.expires_at, margin)
    return now < token.expires_at - margin


class RefreshingCredential:
    """Caches the credential `fetch` returns and refreshes it on demand, before it expires.

    - At most one fetch in flight: concurrent callers await the same task (shielded, so a
      caller that is cancelled does not cancel the fetch for the others).
    - A failed fetch raises to every waiter and starts a backoff (1 s doubling to 30 s) during
      which callers get the same error at once; the first call after it retries.
    - A failed early refresh (the old credential has not expired yet) is logged and the old
      credential is still served: the refresh margin exists to absorb such failures.
    """

    __slots__ = (
        "_backoff",
        "_backoff_initial",
        "_backoff_max",
        "_clock",
        "_current",
        "_failure",
        "_fetch",
        "_inflight",
        "_margin",
        "_refresh_at",
        "_retry_at",
        "name",
    )

    def __init__(
        self,
        name: str,
        fetch: Callable[[], Awaitable[Credential]],
        *,
        refresh_margin: float,
        clock: Clock = time.time,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._margin = refresh_margin
        self._clock = clock
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff = 0.0
        self._current: Credential | None = None
        self._refresh_at = -math.inf
        self._failure: AuthSourceError | None = None
        self._retry_at = -math.inf
        self._inflight: asyncio.Task[Credential] | None = None

    async def get(self) -> Credential:
        now = self._clock()
        current = self._current
        if current is not None and now < self._refresh_at:
            return current
        usable = current if current is not None and _unexpired(current, now) else None
        if self._failure is not None and now < self._retry_at and self._inflight is None:
            if usable is not None:
                return usable
            raise self._failure
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._refresh(), name=f"refresh {self.name}")
        try:
            return await asyncio.shield(self._inflight)
        except AuthSourceError:
            if usable is not None:
                return usable
            raise

    def invalidate(self) -> None:
        self._current = None
        self._refresh_at = -math.inf

    async def aclose(self) -> None:
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _refresh(self) -> Credential:
        try:
            try:
                credential = await self._fetch()
            except AuthSourceError:
                raise
            except Exception as exc:  # a bug or an unexpected library error: name it, once
                _log.exception("auth source %r: fetch failed", self.name)
                raise AuthSourceError(self.name, f"unexpected {type(exc).__name__}") from exc
        except AuthSourceError as exc:
            self._backoff = min(self._backoff_max, self._backoff * 2 or self._backoff_initial)
            self._failure, self._retry_at = exc, self._clock() + self._backoff
            if self._current is not None:
                _log.warning("%s (keeping the current credential until it expires)", exc.reason)
            raise
        finally:
            self._inflight = None
        now = self._clock()
        self._current = credential
        self._refresh_at = refresh_deadline(now, credential.expires_at, self._margin)
        self._failure, self._backoff, self._retry_at = None, 0.0, -math.inf
        return credential


def _unexpired(credential: Credential, now: float) -> bool:
    return credential.expires_at is None or now < credential.expires_at

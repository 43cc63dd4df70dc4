"""The signing keys of one issuer: fetched asynchronously, cached, refreshed, never blocking.

- The first token of an issuer waits for one fetch (discovery, then the JWKS); concurrent
  requests share it (single flight).
- After `jwks_ttl` the set is refreshed in the background while the old one keeps
  serving (stale-while-revalidate); while the endpoint fails, the old set serves for
  up to `jwks_max_stale` more, then the issuer's tokens are refused (503 auth-unavailable).
- An unknown `kid` (a rotation the edge has not seen) joins a fetch under way, or else
  triggers a refresh at most once per `unknown_kid_cooldown` (counted from the last such
  refresh, so a TTL refresh or a failed attempt never makes a real new key wait), so a
  flood of made-up `kid`s cannot hammer the provider.
- After a failed fetch neither the request path nor the background refresh tries again
  before a growing backoff (1 s doubling up to the cooldown) has passed.
- Cached tokens ask `is_current` on every hit: that too starts the background refresh
  after `jwks_ttl` and stops trusting the set past `jwks_max_stale`, so a workload of
  cache hits alone still sees rotations and outages.
- A new set replaces the old one only if it parses and holds a usable key (hardening J15).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson

from kedge.core.net.hosts import is_loopback_host
from kedge.edge.auth.jwk import KeySet, KeySetError, VerificationKey, parse_key_set
from kedge.edge.config import IssuerConfig

__all__ = ["HttpJsonFetcher", "JsonFetcher", "JwksSource", "KeysUnavailable"]

log = logging.getLogger("kedge.auth")

_MAX_DOCUMENT_BYTES = 1024 * 1024
_FIRST_BACKOFF = 1.0


class KeysUnavailable(Exception):
    """No usable key set for an issuer right now (never fetched, or too stale)."""


class JsonFetcher(Protocol):
    async def get_json(self, url: str) -> object: ...
    async def aclose(self) -> None: ...


class HttpJsonFetcher:
    """GET a JSON document over HTTP(S) with a timeout and a size cap (aiohttp)."""

    def __init__(self, timeout: float, ca_file: str | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = ssl.create_default_context(cafile=ca_file)
        self._session: aiohttp.ClientSession | None = None

    async def get_json(self, url: str) -> object:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"accept": "application/json"},
                # The provider's redirects are not followed: a key set comes from the
                # configured place or not at all.
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=4),
            )
        async with self._session.get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise OSError(f"GET {url} answered {resp.status}")
            body = await resp.content.read(_MAX_DOCUMENT_BYTES + 1)
            if len(body) > _MAX_DOCUMENT_BYTES:
                raise OSError(f"GET {url}: document larger than {_MAX_DOCUMENT_BYTES} bytes")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise OSError(f"GET {url}: not JSON") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _fetch_failure(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


class JwksSource:
    def __init__(
        self,
        issuer: IssuerConfig,
        fetcher: JsonFetcher,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._fetcher = fetcher
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0  # clock() of the last successful fetch
        self._attempted_at = -1e18  # clock() of the last fetch attempt, either outcome
        self._kid_refresh_at = -1e18  # clock() of the last refresh an unknown kid started
        self._retry_at = 0.0  # after a failure, no request-path fetch before this
        self._backoff = _FIRST_BACKOFF
        self._jwks_url = issuer.jwks_url
        self._inflight: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.last_error = ""
        self.fetches = 0  # attempts, for /status and tests

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    def status(self) -> dict[str, object]:
        """For the admin `/status` document."""
        keys = self._keys
        return {
            "issuer": self.issuer.issuer,
            "jwks_url": self._jwks_url,
            "keys": sorted(k.kid or "(no kid)" for k in keys.keys) if keys else [],
            "age_seconds": round(self._clock() - self._fetched_at, 1) if keys else None,
            "fetches": self.fetches,
            "last_error": self.last_error or None,
        }

    def has_kid(self, kid: str) -> bool:
        keys = self._keys
        return keys is not None and (not kid or kid in keys.by_kid)

    def is_current(self, kid: str) -> bool:
        """Whether a token verified with `kid` may still be served from the token cache:
        the key is in the set and the set is not past `jwks_max_stale`. Past `jwks_ttl` it
        also starts the background refresh, as a miss would."""
        if not self.has_kid(kid):
            return False
        now = self._clock()
        age = now - self._fetched_at
        if age <= self.issuer.jwks_ttl:
            return True
        if age > self.issuer.jwks_ttl + self.issuer.jwks_max_stale:
            return False  # the miss path refreshes or answers 503
        self._refresh_stale(now)
        return True

    def _refresh_stale(self, now: float) -> None:
        # Stale-while-revalidate, but never sooner than the backoff after a failure: every
        # request past the TTL would otherwise start a new fetch while the provider is down.
        if now >= self._retry_at:
            self._refresh_in_background()

    def _usable(self, now: float) -> bool:
        cfg = self.issuer
        return (
            self._keys is not None and now - self._fetched_at <= cfg.jwks_ttl + cfg.jwks_max_stale
        )

    async def keys_for(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """The keys that may verify a token with this `kid` and `alg` (maybe none)."""
        now = self._clock()
        if not self._usable(now):
            if now >= self._retry_at:
                await self._refresh()
            if not self._usable(self._clock()):
                self._keys = None
                raise KeysUnavailable(
                    f"signing keys of issuer {self.issuer.name} are unavailable"
                    + (f": {self.last_error}" if self.last_error else "")
                )
        elif now - self._fetched_at > self.issuer.jwks_ttl:
            self._refresh_stale(now)
        keys = self._keys
        assert keys is not None
        found = keys.candidates(kid, alg)
        if not found and kid is not None and kid not in keys.by_kid:
            # Maybe a rotation: a fetch under way may bring the kid (waiting for it costs
            # the provider nothing); else refresh, at most once per cooldown.
            joining = self._inflight is not None
            if joining or now - self._kid_refresh_at >= self.issuer.unknown_kid_cooldown:
                if not joining:
                    self._kid_refresh_at = now
                await self._refresh()
                keys = self._keys or keys
                found = keys.candidates(kid, alg)
        return found

    def prefetch(self) -> None:
        """Fetch the key set now (in the background) if the source has none yet, so the
        first token does not wait for the provider."""
        if self._keys is None:
            self._refresh_in_background()

    def _refresh_in_background(self) -> asyncio.Task[None]:
        """Start a fetch unless one is running; either way, the task of the fetch.

        The fetch is a task of its own: a request that stops waiting for it (its client
        went away) does not cancel it for the others."""
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight = task
            self._background.add(task)
            task.add_done_callback(self._fetch_done)
        return task

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if self._inflight is task:
            self._inflight = None

    async def _refresh(self) -> None:
        await asyncio.shield(self._refresh_in_background())

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            if self._jwks_url is None:
                self._jwks_url = await self._discover()
            keys = parse_key_set(await self._fetcher.get_json(self._jwks_url))
        except (OSError, KeySetError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.last_error = _fetch_failure(exc)
            if self.issuer.jwks_url is None:
                self._jwks_url = None  # discover again next time: the provider may have moved it
            self._retry_at = self._clock() + self._backoff
            self._backoff = min(self._backoff * 2, max(self.issuer.unknown_kid_cooldown, 1.0))
            log.warning(
                "JWKS fetch failed; keeping the previous keys",
                extra={"issuer": self.issuer.name, "error": self.last_error},
            )
            return
        if keys.skipped:
            log.warning(
                "JWKS keys skipped", extra={"issuer": self.issuer.name, "skipped": keys.skipped}
            )
        self._keys = keys
        self._fetched_at = self._clock()
        self._backoff = _FIRST_BACKOFF
        self._retry_at = 0.0
        self.last_error = ""

    async def _discover(self) -> str:
        cfg = self.issuer
        url = cfg.discovery_url or cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._fetcher.get_json(url)
        if not isinstance(doc, dict):
            raise ValueError(f"{url}: the discovery document is not a JSON object")
        # OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the one asked for.
        if doc.get("issuer") != cfg.issuer:
            raise ValueError(f"{url}: issuer {doc.get('issuer')!r} is not {cfg.issuer!r}")
        jwks = doc.get("jwks_uri")
        if not isinstance(jwks, str):
            raise ValueError(f"{url}: no jwks_uri")
        parts = urlsplit(jwks)
        loopback = parts.hostname is not None and is_loopback_host(parts.hostname)
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"{url}: jwks_uri {jwks!r} is not https")
        return jwks

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._fetcher.aclose()

"""A service account: an access token by the OAuth 2.0 client_credentials grant (RFC 6749 §4.4)."""

from __future__ import annotations

import logging
import time

from kedge.dialer.config import ClientCredentialsSourceConfig
from kedge.dialer.credentials import (
    Clock,
    Credential,
    RefreshingCredential,
)
from kedge.dialer.sources.oauth import OAuthClient, bearer_from_answer, read_secret_file

__all__ = ["ClientCredentialsSource"]

_log = logging.getLogger(__name__)


class ClientCredentialsSource:
    """The token endpoint comes from discovery; the secret is read from its file at every fetch
    (so a rotated secret is picked up) and sent with HTTP Basic (RFC 6749 §2.3.1)."""

    __slots__ = ("_cache", "_clock", "_config", "_oauth", "name")

    def __init__(
        self,
        config: ClientCredentialsSourceConfig,
        *,
        refresh_margin: float,
        clock: Clock = time.time,
    ) -> None:
        self.name = config.name
        self._config = config
        self._clock = clock
        self._oauth = OAuthClient(config.name, config.issuer)
        self._cache = RefreshingCredential(
            config.name, self._fetch, refresh_margin=refresh_margin, clock=clock
        )

    async def credential(self) -> Credential:
        return await self._cache.get()

    def invalidate(self) -> None:
        self._cache.invalidate()

    async def aclose(self) -> None:
        await self._cache.aclose()
        await self._oauth.aclose()

    async def _fetch(self) -> Credential:
        secret = read_secret_file(self.name, self._config.client_secret_file)
        form = {"grant_type": "client_credentials"}
        if self._config.scopes:
            form["scope"] = " ".join(self._config.scopes)
        if self._config.resource:
            form["resource"] = self._config.resource  # RFC 8707
        answer = await self._oauth.token(
            form, client_id=self._config.client_id, client_secret=secret
        )
        token = bearer_from_answer(self.name, answer, "access_token", self._clock())
        _log.info("auth source %r: got a service account token", self.name)
        return token

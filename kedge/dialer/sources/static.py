"""A static bearer token from the configuration: no expiry, nothing to refresh."""

from __future__ import annotations

from kedge.dialer.config import StaticTokenSourceConfig
from kedge.dialer.credentials import AuthSourceError, BearerToken, Credential

__all__ = ["StaticTokenSource"]


class StaticTokenSource:
    __slots__ = ("_token", "name")

    def __init__(self, config: StaticTokenSourceConfig) -> None:
        self.name = config.name
        self._token = BearerToken(config.token.strip())

    async def credential(self) -> Credential:
        if not self._token.value:
            raise AuthSourceError(self.name, "the token is empty; set `token`")
        return self._token

    def invalidate(self) -> None:
        """Nothing to drop: the edge refusing a fixed token is reported to the caller as is."""

    async def aclose(self) -> None:
        return None

"""AuthSources: the configured auth sources by name, each built on first use.

Lazy on purpose (kEdge issue #100: one broken source stopped winch from starting): building a
source does no I/O, and a source is built only when a route first needs it, so a missing
kubeconfig user or an unreachable issuer fails only the routes that use that source, with
an AuthSourceError naming it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from kedge.dialer.config import (
    AuthSourceConfig,
    ClientCredentialsSourceConfig,
    KubeconfigSourceConfig,
    OidcSourceConfig,
    StaticTokenSourceConfig,
    TokenFileSourceConfig,
)
from kedge.dialer.credentials import AuthSource, AuthSourceError, Clock
from kedge.dialer.sources.client_credentials import ClientCredentialsSource
from kedge.dialer.sources.kubeconfig import KubeconfigSource
from kedge.dialer.sources.oidc import OidcSource
from kedge.dialer.sources.static import StaticTokenSource
from kedge.dialer.sources.token_file import TokenFileSource

__all__ = ["AuthSources", "build_source"]


def build_source(
    config: AuthSourceConfig,
    *,
    refresh_margin: float,
    open_browser: Callable[[str], None] | None = None,
    clock: Clock = time.time,
) -> AuthSource:
    """The source for one config (no I/O happens here)."""
    match config:
        case StaticTokenSourceConfig():
            return StaticTokenSource(config)
        case TokenFileSourceConfig():
            return TokenFileSource(config)
        case KubeconfigSourceConfig():
            return KubeconfigSource(config, refresh_margin=refresh_margin, clock=clock)
        case OidcSourceConfig():
            return OidcSource(
                config, refresh_margin=refresh_margin, open_browser=open_browser, clock=clock
            )
        case ClientCredentialsSourceConfig():
            return ClientCredentialsSource(config, refresh_margin=refresh_margin, clock=clock)


class AuthSources:
    """The named sources of one configuration; `aclose()` closes those that were built."""

    __slots__ = ("_built", "_clock", "_configs", "_margin", "_open_browser")

    def __init__(
        self,
        configs: Mapping[str, AuthSourceConfig],
        *,
        refresh_margin: float,
        open_browser: Callable[[str], None] | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._configs = dict(configs)
        self._margin = refresh_margin
        self._open_browser = open_browser
        self._clock = clock
        self._built: dict[str, AuthSource] = {}

    def names(self) -> tuple[str, ...]:
        return tuple(self._configs)

    def get(self, name: str) -> AuthSource:
        source = self._built.get(name)
        if source is not None:
            return source
        config = self._configs.get(name)
        if config is None:
            known = ", ".join(sorted(self._configs)) or "none"
            raise AuthSourceError(name, f"no such auth source (configured: {known})")
        source = build_source(
            config,
            refresh_margin=self._margin,
            open_browser=self._open_browser,
            clock=self._clock,
        )
        self._built[name] = source
        return source

    async def aclose(self) -> None:
        built, self._built = self._built, {}
        for source in built.values():
            await source.aclose()

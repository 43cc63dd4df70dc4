"""A user's OIDC login: tokens cached on disk (0600), refreshed, and a browser login when needed.

Order of attempts on each fetch: the cached ID/access token while it has more than the
refresh margin left; then the refresh_token grant (RFC 6749 §6), storing a rotated refresh
token when the provider returns one; then, when the refresh token is missing or refused
(`invalid_grant`) and `login` is true, the interactive login (oidc_login). An outage of the
token endpoint does not trigger a login: it is reported, and retried after a backoff.
The credential is the ID token (what kubectl and kEdge send) or the access token, per `use`;
its expiry is the JWT's `exp`, read without verification (the edge verifies).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedge.dialer.config import OidcSourceConfig, TokenKind
from kedge.dialer.credentials import (
    AuthSourceError,
    BearerToken,
    Clock,
    Credential,
    RefreshingCredential,
    stored_jwt_is_fresh,
    unverified_jwt_claims,
    unverified_jwt_expiry,
)
from kedge.dialer.sources.files import replace_file
from kedge.dialer.sources.oauth import (
    OAuthClient,
    TokenEndpointError,
    bearer_from_answer,
    read_secret_file,
)
from kedge.dialer.sources.oidc_login import interactive_login

__all__ = ["OidcSource", "default_cache_dir", "oidc_cache_path"]

_log = logging.getLogger(__name__)


def default_cache_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """$XDG_CACHE_HOME/kedge, else ~/.cache/kedge (XDG Base Directory specification)."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kedge"


def oidc_cache_path(config: OidcSourceConfig) -> Path:
    """One file per source name + issuer + client: changing either starts a fresh login."""
    base = Path(os.path.expanduser(config.cache_dir)) if config.cache_dir else default_cache_dir()
    digest = hashlib.sha256(f"{config.name}\n{config.issuer}\n{config.client_id}".encode())
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", config.name)[:40]
    return base / f"oidc-{safe_name}-{digest.hexdigest()[:16]}.json"


def _default_open_browser(url: str) -> None:
    webbrowser.open(url)


class OidcSource:
    """One configured OIDC login; `login()` forces the browser login (`winch login <name>`)."""

    __slots__ = (
        "_cache",
        "_clock",
        "_config",
        "_margin",
        "_oauth",
        "_open_browser",
        "_skip_cached",
        "cache_path",
        "name",
    )

    def __init__(
        self,
        config: OidcSourceConfig,
        *,
        refresh_margin: float,
        open_browser: Callable[[str], None] | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.name = config.name
        self.cache_path = oidc_cache_path(config)
        self._config = config
        self._margin = refresh_margin
        self._clock = clock
        self._open_browser = open_browser or _default_open_browser
        self._oauth = OAuthClient(config.name, config.issuer)
        self._skip_cached = False
        self._cache = RefreshingCredential(
            config.name, self._fetch, refresh_margin=refresh_margin, clock=clock
        )

    async def credential(self) -> Credential:
        return await self._cache.get()

    def invalidate(self) -> None:
        # The edge refused the token: the copy on disk is no better, go to the refresh token.
        self._skip_cached = True
        self._cache.invalidate()

    async def aclose(self) -> None:
        await self._cache.aclose()
        await self._oauth.aclose()

    async def login(self) -> Credential:
        """Run the interactive login now, whatever the cache holds; save and use its tokens."""
        token = await self._login(self._load())
        self._cache.invalidate()
        return token

    @property
    def _token_field(self) -> str:
        return "id_token" if self._config.use is TokenKind.ID_TOKEN else "access_token"

    async def _fetch(self) -> Credential:
        stored = self._load()
        now = self._clock()
        if not self._skip_cached:
            token = self._stored_token(stored)
            if token is not None and stored_jwt_is_fresh(token, now, self._margin):
                return token
        self._skip_cached = False
        refresh_token = stored.get("refresh_token")
        if isinstance(refresh_token, str) and refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
            if self._config.resource:
                form["resource"] = self._config.resource
            try:
                answer = await self._oauth.token(
                    form, client_id=self._config.client_id, client_secret=self._secret()
                )
            except TokenEndpointError as exc:
                # invalid_grant: the refresh token expired or was revoked; only a login helps.
                # Anything else (an outage, a misconfigured client) must not open a browser.
                if exc.error != "invalid_grant":
                    raise
                _log.warning("auth source %r: the refresh token was refused", self.name)
                stored.pop("refresh_token", None)
                self._save(stored)
            else:
                return self._store_answer(stored, answer, now)
        if not self._config.login:
            raise AuthSourceError(
                self.name,
                "no valid refresh token and `login: false`; run `winch login "
                f"{self.name}` to log in",
            )
        return await self._login(stored)

    async def _login(self, stored: dict[str, Any]) -> BearerToken:
        metadata = await self._oauth.metadata()
        if metadata.authorization_endpoint is None:
            raise AuthSourceError(self.name, "the provider has no authorization_endpoint")
        result = await interactive_login(
            self.name,
            authorization_endpoint=metadata.authorization_endpoint,
            issuer=metadata.issuer,
            client_id=self._config.client_id,
            scopes=self._config.scopes,
            resource=self._config.resource,
            open_browser=self._open_browser,
            time_limit=self._config.login_timeout,
        )
        form = {
            "grant_type": "authorization_code",
            "code": result.code,
            "redirect_uri": result.redirect_uri,
            "code_verifier": result.code_verifier,
        }
        answer = await self._oauth.token(
            form, client_id=self._config.client_id, client_secret=self._secret()
        )
        id_token = answer.get("id_token")
        # OpenID Connect Core §3.1.3.7: the ID token echoes our nonce (replay protection).
        if isinstance(id_token, str) and (
            (unverified_jwt_claims(id_token) or {}).get("nonce") != result.nonce
        ):
            raise AuthSourceError(self.name, "the ID token's nonce does not match the login")
        _log.info("auth source %r: logged in", self.name)
        return self._store_answer(stored, answer, self._clock())

    def _store_answer(
        self, stored: dict[str, Any], answer: dict[str, Any], now: float
    ) -> BearerToken:
        token = bearer_from_answer(self.name, answer, self._token_field, now)
        access = answer.get("access_token")
        expires_in = answer.get("expires_in")
        doc = {
            "issuer": self._config.issuer,
            "client_id": self._config.client_id,
            # RFC 6749 §6: a new refresh token replaces the old one, which may now be revoked.
            "refresh_token": answer.get("refresh_token") or stored.get("refresh_token"),
            "id_token": answer.get("id_token"),
            "access_token": access if isinstance(access, str) else None,
            "access_expires_at": now + expires_in if isinstance(expires_in, int) else None,
        }
        self._save(doc)
        return token

    def _stored_token(self, stored: dict[str, Any]) -> BearerToken | None:
        value = stored.get(self._token_field)
        if not isinstance(value, str) or not value:
            return None
        expires_at = unverified_jwt_expiry(value)
        if expires_at is None and self._token_field == "access_token":
            raw = stored.get("access_expires_at")
            expires_at = float(raw) if isinstance(raw, int | float) else None
        return BearerToken(value, expires_at)

    def _secret(self) -> str | None:
        path = self._config.client_secret_file
        return read_secret_file(self.name, path) if path else None

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.cache_path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _log.warning(
                "auth source %r: ignoring unreadable cache %s (%s)",
                self.name,
                self.cache_path,
                type(exc).__name__,
            )
            return {}
        if not isinstance(doc, dict) or doc.get("issuer") != self._config.issuer:
            return {}
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        try:
            # 0600: the refresh token is as good as the user's password for its lifetime.
            replace_file(self.cache_path, json.dumps(doc).encode(), 0o600)
        except OSError as exc:
            raise AuthSourceError(
                self.name, f"cannot write the token cache {self.cache_path}: {exc.strerror}"
            ) from exc

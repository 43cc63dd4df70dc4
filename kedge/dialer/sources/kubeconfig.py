"""A kubeconfig user as an auth source: token, tokenFile, client certificate, exec, OIDC.

The file is `path`, else every file in $KUBECONFIG (the first that defines the user wins, as
kubectl merges), else ~/.kube/config; it is read again at every fetch, so `kubectl` logins
and edits are picked up. When a user has several, the first of these is used: `exec`,
`auth-provider` (oidc only), `token`, `tokenFile`, client certificate. Relative paths are
relative to the kubeconfig's directory (as client-go resolves them). The YAML is parsed here
rather than with kubernetes_asyncio's loader: only `users` matters, and a plain dict is what
the OIDC write-back needs.

OIDC auth-provider: the `id-token` is used until its `exp` (less the margin); then the
`refresh-token` is exchanged at the issuer's token endpoint (discovery), and the new
id-token and refresh-token are written back into the kubeconfig, atomically and keeping
its mode, as kubectl's oidc plugin does, so kubectl and winch share one login.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from kedge.dialer.config import KubeconfigSourceConfig
from kedge.dialer.credentials import (
    AuthSourceError,
    BearerToken,
    ClientCertificate,
    Clock,
    Credential,
    RefreshingCredential,
    stored_jwt_is_fresh,
    unverified_jwt_expiry,
)
from kedge.dialer.sources.files import replace_file
from kedge.dialer.sources.kube_exec import run_exec_plugin
from kedge.dialer.sources.oauth import OAuthClient, bearer_from_answer

__all__ = ["KubeconfigSource", "kubeconfig_paths"]

_log = logging.getLogger(__name__)


def kubeconfig_paths(path: str | None, environ: Mapping[str, str]) -> list[Path]:
    """The files to search, in kubectl's order."""
    if path:
        return [Path(os.path.expanduser(path))]
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return [Path(os.path.expanduser(p)) for p in listed]
    return [Path(os.path.expanduser("~")) / ".kube" / "config"]


class KubeconfigSource:
    __slots__ = (
        "_cache",
        "_clock",
        "_config",
        "_environ",
        "_exec_timeout",
        "_margin",
        "_oauth",
        "_skip_cached",
        "name",
    )

    def __init__(
        self,
        config: KubeconfigSourceConfig,
        *,
        refresh_margin: float,
        clock: Clock = time.time,
        environ: Mapping[str, str] | None = None,
        exec_timeout: float = 60.0,
    ) -> None:
        self.name = config.name
        self._config = config
        self._margin = refresh_margin
        self._clock = clock
        self._environ = dict(os.environ if environ is None else environ)
        self._exec_timeout = exec_timeout
        self._oauth: OAuthClient | None = None
        self._skip_cached = False
        self._cache = RefreshingCredential(
            config.name, self._fetch, refresh_margin=refresh_margin, clock=clock
        )

    async def credential(self) -> Credential:
        return await self._cache.get()

    def invalidate(self) -> None:
        self._skip_cached = True  # an OIDC id-token in the file is no better: refresh it
        self._cache.invalidate()

    async def aclose(self) -> None:
        await self._cache.aclose()
        if self._oauth is not None:
            await self._oauth.aclose()

    async def _fetch(self) -> Credential:
        path, user = self._find_user()
        base = path.parent
        skip_cached, self._skip_cached = self._skip_cached, False
        if isinstance(user.get("exec"), dict):
            return await run_exec_plugin(
                self.name,
                user["exec"],
                base_dir=base,
                environ=self._environ,
                time_limit=self._exec_timeout,
            )
        provider = user.get("auth-provider")
        if isinstance(provider, dict):
            if provider.get("name") != "oidc":
                raise AuthSourceError(
                    self.name,
                    f"auth-provider {provider.get('name')!r} of user {self._config.user!r} in "
                    f"{path} is not supported (only oidc; use an exec plugin instead)",
                )
            return await self._oidc(path, provider.get("config") or {}, skip_cached)
        token = user.get("token")
        if isinstance(token, str) and token:
            return BearerToken(token.strip())
        token_file = user.get("tokenFile")
        if isinstance(token_file, str) and token_file:
            return BearerToken(self._read(base, token_file, "tokenFile").decode().strip())
        cert = self._pem(base, user, "client-certificate")
        key = self._pem(base, user, "client-key")
        if cert is not None and key is not None:
            return ClientCertificate(cert, key, _not_after(cert))
        raise AuthSourceError(
            self.name,
            f"user {self._config.user!r} in {path} has no token, tokenFile, client certificate "
            "and key, exec or oidc auth-provider",
        )

    def _find_user(self) -> tuple[Path, dict[str, Any]]:
        paths = kubeconfig_paths(self._config.path, self._environ)
        seen: list[str] = []
        for path in paths:
            doc = self._load(path, required=len(paths) == 1)
            for entry in doc.get("users") or ():
                if not isinstance(entry, dict):
                    continue
                seen.append(str(entry.get("name")))
                if entry.get("name") == self._config.user:
                    user = entry.get("user")
                    return path, user if isinstance(user, dict) else {}
        where = ", ".join(str(p) for p in paths)
        known = ", ".join(seen) if seen else "none"
        raise AuthSourceError(
            self.name,
            f"no user {self._config.user!r} in {where} (users: {known}); fix `user` or the file",
        )

    def _load(self, path: Path, *, required: bool) -> dict[str, Any]:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if required:
                raise AuthSourceError(self.name, f"kubeconfig {path} does not exist") from None
            return {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise AuthSourceError(
                self.name, f"cannot read kubeconfig {path}: {type(exc).__name__}"
            ) from exc
        return doc if isinstance(doc, dict) else {}

    def _read(self, base: Path, name: str, key: str) -> bytes:
        path = base / os.path.expanduser(name)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise AuthSourceError(
                self.name, f"cannot read {key} {path} of user {self._config.user!r}: {exc.strerror}"
            ) from exc

    def _pem(self, base: Path, user: Mapping[str, Any], key: str) -> bytes | None:
        data = user.get(f"{key}-data")
        if isinstance(data, str) and data:
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise AuthSourceError(
                    self.name, f"{key}-data of user {self._config.user!r} is not base64"
                ) from None
        name = user.get(key)
        if isinstance(name, str) and name:
            return self._read(base, name, key)
        return None

    async def _oidc(self, path: Path, config: Mapping[str, Any], skip_cached: bool) -> Credential:
        now = self._clock()
        id_token = config.get("id-token")
        if isinstance(id_token, str) and id_token and not skip_cached:
            stored = BearerToken(id_token, unverified_jwt_expiry(id_token))
            if stored_jwt_is_fresh(stored, now, self._margin):
                return stored
        issuer, client_id = config.get("idp-issuer-url"), config.get("client-id")
        refresh_token = config.get("refresh-token")
        if not (isinstance(issuer, str) and isinstance(client_id, str)):
            raise AuthSourceError(
                self.name, f"oidc auth-provider in {path} needs idp-issuer-url and client-id"
            )
        if not isinstance(refresh_token, str) or not refresh_token:
            raise AuthSourceError(
                self.name, f"the oidc id-token in {path} expired and there is no refresh-token"
            )
        if config.get("idp-certificate-authority") or config.get("idp-certificate-authority-data"):
            _log.warning("auth source %r: idp-certificate-authority is not supported", self.name)
        if self._oauth is None or self._oauth.issuer != issuer.rstrip("/"):
            if self._oauth is not None:
                await self._oauth.aclose()
            self._oauth = OAuthClient(self.name, issuer)
        secret = config.get("client-secret")
        answer = await self._oauth.token(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            client_id=client_id,
            client_secret=secret if isinstance(secret, str) and secret else None,
        )
        token = bearer_from_answer(self.name, answer, "id_token", now)
        new_refresh = answer.get("refresh_token")
        self._write_back(path, token.value, new_refresh if isinstance(new_refresh, str) else None)
        return token

    def _write_back(self, path: Path, id_token: str, refresh_token: str | None) -> None:
        """Store the new tokens in the user's auth-provider config, re-reading the file first
        so a concurrent edit of another entry is not lost."""
        doc = self._load(path, required=True)
        for entry in doc.get("users") or ():
            if isinstance(entry, dict) and entry.get("name") == self._config.user:
                provider = (entry.get("user") or {}).get("auth-provider")
                if not isinstance(provider, dict):
                    return  # edited meanwhile: the new file wins
                config = provider.setdefault("config", {})
                config["id-token"] = id_token
                if refresh_token:
                    config["refresh-token"] = refresh_token
                break
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            text = yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)
            replace_file(path, text.encode(), mode)
        except OSError as exc:
            # The token is good; only kubectl will not share it. Say so, and carry on.
            _log.warning(
                "auth source %r: cannot write the refreshed token back to %s: %s",
                self.name,
                path,
                exc.strerror,
            )


def _not_after(cert_pem: bytes) -> float | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return None  # let the TLS handshake report a bad certificate
    return cert.not_valid_after_utc.timestamp()

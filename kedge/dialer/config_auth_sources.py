"""The `auth_sources:` section of a winch/dialer config: named credential sources, checked
key by key (kedge.dialer.config_parser reads the rest of the file).

Every file a source names must exist when the config is loaded (a kubeconfig excepted: it
may appear later, sources start lazily). Issuers are https://, or http:// on a loopback
address only (a local test provider). Source names become cache file names, so they are
restricted to lower-case letters, digits and `- _ .`.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from kedge.core.config_loading import Node, existing_file
from kedge.dialer.config import (
    AuthSourceConfig,
    ClientCredentialsSourceConfig,
    KubeconfigSourceConfig,
    OidcSourceConfig,
    StaticTokenSourceConfig,
    TokenFileSourceConfig,
    TokenKind,
)

__all__ = ["parse_auth_sources"]

_SOURCE_KINDS = ("oidc", "kubeconfig", "client_credentials", "token", "token_file")
_OIDC_KEYS = (
    "issuer",
    "client_id",
    "client_secret_file",
    "scopes",
    "use",
    "resource",
    "cache_dir",
    "login",
    "login_timeout",
)
_CC_KEYS = ("issuer", "client_id", "client_secret_file", "scopes", "resource")
# Source names appear in file names (the token cache) and URL paths: keep them plain.
_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1 b64token
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def parse_auth_sources(node: Node | None, base_dir: str | None) -> dict[str, AuthSourceConfig]:
    if node is None:
        return {}
    out: dict[str, AuthSourceConfig] = {}
    for name in node.as_mapping():
        item = node.child(name)
        if not _SOURCE_NAME.fullmatch(name):
            raise item.error(
                f"{name!r} is not a valid auth source name",
                "use lower-case letters, digits, '-', '_' and '.', starting with a letter or digit",
            )
        kinds = item.as_mapping(_SOURCE_KINDS)
        given = [k for k in _SOURCE_KINDS if k in kinds]
        if len(given) != 1:
            raise item.error(
                "an auth source needs exactly one kind"
                + (f" (it has {' and '.join(given)})" if given else ""),
                f"write one of: {', '.join(_SOURCE_KINDS)}",
            )
        out[name] = _source(name, given[0], item.child(given[0]), base_dir)
    return out


def _source(name: str, kind: str, node: Node, base_dir: str | None) -> AuthSourceConfig:
    if kind == "token":
        f = node.as_mapping(("value",))
        value = f.require("value", "give the bearer token (better: use token_file)")
        token = value.as_str()
        if not _B64TOKEN.fullmatch(token):
            raise value.error(
                "the token has characters a bearer token cannot hold",
                "give the token alone: letters, digits and -._~+/ (RFC 6750)",
            )
        return StaticTokenSourceConfig(name, token)
    if kind == "token_file":
        f = node.as_mapping(("path",))
        token_path = f.require("path", "give the file holding the token")
        return TokenFileSourceConfig(name, existing_file(token_path, base_dir))
    if kind == "kubeconfig":
        f = node.as_mapping(("path", "user"))
        user = f.require("user", "name the kubeconfig user, e.g. `user: alice`").as_str()
        path_node = f.get("path")
        # Not required to exist yet: a source starts lazily, and `kubectl` may create it later.
        path = None if path_node is None else _path(path_node.as_str(), base_dir)
        return KubeconfigSourceConfig(name, user, path)
    if kind == "oidc":
        f = node.as_mapping(_OIDC_KEYS)
        d = OidcSourceConfig(name, "", "")
        use = f.get_enum("use", TokenKind, d.use)
        scopes = _scopes(f.get("scopes"), d.scopes)
        if use is TokenKind.ID_TOKEN and "openid" not in scopes:
            raise node.child("scopes").error(
                "an ID token is only issued with the `openid` scope", "add openid to scopes"
            )
        login_timeout = f.get_duration("login_timeout", d.login_timeout, allow_zero=False)
        cache = f.get("cache_dir")
        return OidcSourceConfig(
            name=name,
            issuer=_issuer(f.require("issuer", "e.g. `issuer: https://login.example.test`")),
            client_id=f.require("client_id", "give the OAuth client's ID").as_str(),
            client_secret_file=_optional_file(f.get("client_secret_file"), base_dir),
            scopes=scopes,
            use=use,
            resource=_resource(f.get("resource")),
            cache_dir=None if cache is None else _path(cache.as_str(), base_dir),
            login=f.get_bool("login", d.login),
            login_timeout=login_timeout,
        )
    f = node.as_mapping(_CC_KEYS)
    fix = "give the file holding the client secret"
    return ClientCredentialsSourceConfig(
        name=name,
        issuer=_issuer(f.require("issuer", "e.g. `issuer: https://login.example.test`")),
        client_id=f.require("client_id", "give the OAuth client's ID").as_str(),
        client_secret_file=existing_file(f.require("client_secret_file", fix), base_dir),
        scopes=_scopes(f.get("scopes"), ()),
        resource=_resource(f.get("resource")),
    )


def _issuer(node: Node) -> str:
    """https://, or http:// on a loopback host (a local test provider, RFC 8252 §8.3 spirit)."""
    text = node.as_str()
    parts = urlsplit(text)
    fix = "write the issuer URL exactly as the provider's discovery document gives it"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise node.error(f"{text!r} is not an https:// URL", fix)
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise node.error(
            f"the issuer {text!r} is plain http://; tokens would cross the network in the clear",
            "use https:// (http:// is accepted only for 127.0.0.1, ::1 and localhost)",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise node.error(f"the issuer {text!r} has a query, fragment or user info", fix)
    return text


def _resource(node: Node | None) -> str | None:
    if node is None:
        return None
    text = node.as_str()
    parts = urlsplit(text)
    if not parts.scheme or parts.fragment:  # RFC 8707 §2: an absolute URI, no fragment
        raise node.error(
            f"{text!r} is not a resource indicator",
            "write an absolute URI without a fragment, e.g. https://api.cluster-a.internal",
        )
    return text


def _scopes(node: Node | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if node is None:
        return default
    scopes: list[str] = []
    for item in node.as_list():
        scope = item.as_str()
        if not _SCOPE.fullmatch(scope):
            raise item.error(f"{scope!r} is not a scope", "one scope per item, e.g. openid")
        if scope not in scopes:
            scopes.append(scope)
    return tuple(scopes)


def _optional_file(node: Node | None, base_dir: str | None) -> str | None:
    return None if node is None else existing_file(node, base_dir)


def _path(text: str, base_dir: str | None) -> str:
    path = os.path.expanduser(text)
    if base_dir is not None and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    return path

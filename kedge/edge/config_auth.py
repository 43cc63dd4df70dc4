"""Parsing of the auth settings: the `auth:` section, route `auth:` blocks and listener mTLS.

Every refusal names the key path and a fix. Consistency rules that span sections (a route
policy without an `auth:` section, principal patterns no listener can satisfy) are checked
by `check_auth_consistency` once the whole config is parsed.
"""

from __future__ import annotations

import re
import ssl
from typing import Literal
from urllib.parse import urlsplit

from kedge.core.config_loading import (
    Node,
    claim_name,
    dataclass_keys,
    existing_file,
    header_name,
    node_list,
)
from kedge.core.net.hosts import is_loopback_host
from kedge.edge.config import (
    AuthConfig,
    ClientCertConfig,
    ClientCertMode,
    CredentialSource,
    EdgeConfig,
    IssuerConfig,
    NoEkuPolicy,
    PermissionMode,
    PrincipalKind,
    PrincipalPattern,
    RouteAuth,
)

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "check_auth_consistency",
    "parse_auth",
    "parse_client_certs",
    "parse_credentials",
    "parse_route_auth",
]

# JWS algorithms with a public verification key (RFC 7518 §3.1, RFC 8037). `none` and the
# HMAC family are never accepted: a public key used as an HMAC secret is the classic
# algorithm-confusion forgery (RFC 8725 §2.1).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_ISSUER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_CLAIM_PATH = re.compile(r"[A-Za-z0-9_:/-]+(\.[A-Za-z0-9_:/-]+)*")
_PATTERN_FIX = (
    "write `kind:value` with kind one of uri, dns, cn, subject (client certificate), "
    "sub, group (token; `sub@<issuer>:value` accepts only that issuer's tokens); a trailing "
    "* matches a prefix"
)


def parse_client_certs(node: Node, base_dir: str | None) -> ClientCertConfig:
    f = node.as_mapping(("mode", "ca_files", "crl_files", "no_eku"))
    d = ClientCertConfig()
    mode = f.get_enum("mode", ClientCertMode, ClientCertMode.REQUIRED)
    cas = tuple(_trust_file(n, base_dir, "x509") for n in node_list(f.get("ca_files")))
    crls = tuple(_trust_file(n, base_dir, "crl") for n in node_list(f.get("crl_files")))
    if mode is not ClientCertMode.OFF and not cas:
        raise node.child("ca_files").error(
            "client certificates are asked for, but no CA is given to verify them",
            "list the PEM files of the CAs that issue client certificates under `ca_files`",
        )
    return ClientCertConfig(
        mode=mode,
        ca_files=cas,
        crl_files=crls,
        no_eku=f.get_enum("no_eku", NoEkuPolicy, d.no_eku),
    )


def _trust_file(node: Node, base_dir: str | None, holds: Literal["x509", "crl"]) -> str:
    """A `ca_files` or `crl_files` entry, loaded as the listener will load it. A key, or a
    certificate and a CRL in each other's list, fails here naming the entry; otherwise the
    listener would start and refuse every client (no CA, or CRL checks with no CRL)."""
    path = existing_file(node, base_dir)
    what = "PEM certificates" if holds == "x509" else "PEM CRLs"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_verify_locations(cafile=path)
        found = ctx.cert_store_stats().get(holds, 0)
    except (ssl.SSLError, OSError, ValueError):
        found = 0
    if not found:
        raise node.error(
            f"file {path!r} holds no {what}",
            "list the CA certificates under `ca_files` and the CRLs under `crl_files`",
        )
    return path


def parse_credentials(node: Node) -> tuple[CredentialSource, ...]:
    sources = tuple(n.as_enum(CredentialSource) for n in node.as_list(allow_empty=False))
    if len(set(sources)) != len(sources):
        raise node.error("a credential source is listed twice", "list each source once")
    return sources


def parse_auth(node: Node | None, base_dir: str | None) -> AuthConfig | None:
    if node is None:
        return None
    f = node.as_mapping(dataclass_keys(AuthConfig))
    d = AuthConfig()
    seen: dict[str, str] = {}
    issuers = []
    for item in node_list(f.get("issuers")):
        issuer = _issuer(item, base_dir)
        claim_name(seen, issuer.name, item.child("name"), "issuer")
        issuers.append(issuer)
    by_iss: dict[str, str] = {}
    for item, issuer in zip(node_list(f.get("issuers")), issuers, strict=True):
        if issuer.issuer in by_iss:
            raise item.child("issuer").error(
                f"issuer {issuer.issuer!r} is configured twice (also {by_iss[issuer.issuer]})",
                "merge the two entries: list all audiences of that issuer in one",
            )
        by_iss[issuer.issuer] = item.path
    identity = f.get("identity_header")
    return AuthConfig(
        issuers=tuple(issuers),
        max_token_bytes=f.get_size("max_token_bytes", d.max_token_bytes, allow_zero=False),
        token_cache_size=f.get_int("token_cache_size", d.token_cache_size, minimum=0),
        identity_header=header_name(identity.as_str(), identity) if identity is not None else None,
        strip_headers=tuple(header_name(n.as_str(), n) for n in node_list(f.get("strip_headers"))),
        default_route=parse_route_auth(n) if (n := f.get("default_route")) else d.default_route,
        adhoc=parse_route_auth(n) if (n := f.get("adhoc")) else d.adhoc,
    )


def parse_route_auth(node: Node) -> RouteAuth:
    f = node.as_mapping(("anonymous", "permissions", "principals"))
    anonymous = f.get_bool("anonymous", False)
    permissions: tuple[str, ...] = ()
    mode = PermissionMode.ANY_OF
    if (pn := f.get("permissions")) is not None:
        permissions, mode = _permissions(pn)
    principals = tuple(_principal(n) for n in node_list(f.get("principals")))
    if anonymous and (permissions or principals):
        raise node.child("anonymous").error(
            "an anonymous route cannot also require permissions or principals",
            "remove `anonymous: true`, or remove `permissions` and `principals`",
        )
    return RouteAuth(anonymous, permissions, mode, principals)


def check_auth_consistency(config: EdgeConfig, root: Node) -> None:
    """Rules across sections: route policies need an `auth:` section, permissions need an
    issuer, and certificate patterns need a listener that asks for client certificates."""
    routes = root.child("routes")
    has_certs = any(
        lst.tls is not None and lst.tls.client_certs.mode is not ClientCertMode.OFF
        for lst in config.listeners
    )
    auth = config.auth
    policies: list[tuple[Node, RouteAuth]] = [
        (routes.item(i).child("auth"), r.auth)
        for i, r in enumerate(config.routes)
        if r.auth is not None
    ]
    if auth is None:
        if policies:
            raise policies[0][0].error(
                "this route has an auth policy, but the config has no top-level `auth:` section",
                "add `auth:` (with `issuers:` for tokens); it also makes routes without a "
                "policy require authentication unless marked `anonymous: true`",
            )
        return
    section = root.child("auth")
    policies += [(section.child("default_route"), auth.default_route)]
    policies += [(section.child("adhoc"), auth.adhoc)]
    for where, policy in policies:
        if policy.permissions and not auth.issuers:
            raise where.child("permissions").error(
                "permissions come from tokens, but no issuer is configured",
                "add an OpenID provider under `auth.issuers`",
            )
        for pattern in policy.principals:
            if pattern.kind in _CERT_KINDS and not has_certs:
                raise where.child("principals").error(
                    f"{pattern} names a client certificate, but no listener asks for one",
                    "set `tls.client_certs` on a TLS listener",
                )
            if pattern.kind not in _CERT_KINDS and not auth.issuers:
                raise where.child("principals").error(
                    f"{pattern} names a token claim, but no issuer is configured",
                    "add an OpenID provider under `auth.issuers`",
                )
            names = [i.name for i in auth.issuers]
            if pattern.issuer is not None and pattern.issuer not in names:
                raise where.child("principals").error(
                    f"{pattern} names the issuer {pattern.issuer!r}, which is not configured",
                    f"use one of the names under `auth.issuers`: {', '.join(names)}",
                )


_CERT_KINDS = frozenset(
    {PrincipalKind.URI, PrincipalKind.DNS, PrincipalKind.CN, PrincipalKind.SUBJECT}
)


def _issuer(node: Node, base_dir: str | None) -> IssuerConfig:
    f = node.as_mapping(dataclass_keys(IssuerConfig))
    name = f.require("name", "name the issuer, e.g. `name: corp`").as_str()
    if not _ISSUER_NAME.fullmatch(name):
        raise node.child("name").error(
            f"issuer name {name!r} is not valid", "use lower-case letters, digits, '_', '.', '-'"
        )
    iss_node = f.require("issuer", "give the exact `iss` value of the provider's tokens")
    iss = iss_node.as_str()
    _url(iss_node, allow_path=True)
    audiences = tuple(
        n.as_str()
        for n in f.require(
            "audiences", "list the `aud` values this edge accepts, e.g. [kedge]"
        ).as_list(allow_empty=False)
    )
    jwks = _url(n, allow_path=True) if (n := f.get("jwks_url")) else None
    discovery = _url(n, allow_path=True) if (n := f.get("discovery_url")) else None
    if jwks is not None and discovery is not None:
        raise node.child("discovery_url").error(
            "both jwks_url and discovery_url are given", "keep one: a pinned jwks_url wins"
        )
    d = IssuerConfig(name, iss, audiences)
    alg_node = f.get("algorithms")
    algorithms = (
        tuple(n.as_str() for n in alg_node.as_list(allow_empty=False))
        if alg_node is not None
        else d.algorithms
    )
    for i, alg in enumerate(algorithms):
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise (
                node.child("algorithms")
                .item(i)
                .error(
                    f"algorithm {alg!r} is not accepted",
                    f"use asymmetric algorithms only: {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}",
                )
            )
    ca = f.get("ca_file")
    return IssuerConfig(
        name=name,
        issuer=iss,
        audiences=audiences,
        jwks_url=jwks,
        discovery_url=discovery,
        algorithms=algorithms,
        permissions_claim=_claim_path(f.get("permissions_claim"), d.permissions_claim),
        groups_claim=_claim_path(f.get("groups_claim"), d.groups_claim),
        leeway=f.get_duration("leeway", d.leeway),
        max_lifetime=f.get_duration("max_lifetime", d.max_lifetime),
        jwks_ttl=f.get_duration("jwks_ttl", d.jwks_ttl, allow_zero=False),
        jwks_max_stale=f.get_duration("jwks_max_stale", d.jwks_max_stale),
        unknown_kid_cooldown=f.get_duration("unknown_kid_cooldown", d.unknown_kid_cooldown),
        fetch_timeout=f.get_duration("fetch_timeout", d.fetch_timeout, allow_zero=False),
        ca_file=existing_file(ca, base_dir) if ca is not None else None,
    )


def _url(node: Node, *, allow_path: bool) -> str:
    """An https URL; plain http only to a loopback address (a provider on the same host):
    keys fetched over plain http could be replaced in transit (hardening J16)."""
    text = node.as_str()
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a port outside 0-65535
    except ValueError:  # e.g. "https://[::1" (an unclosed IPv6 literal)
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise node.error(f"{text!r} is not an http(s) URL", "write e.g. https://idp.example")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise node.error(
            f"{text!r} uses plain http", "use https (plain http is allowed only for loopback)"
        )
    if parts.query or parts.fragment or (not allow_path and parts.path not in ("", "/")):
        raise node.error(f"{text!r} has parts a provider URL cannot have", "remove ?query/#frag")
    return text


def _claim_path(node: Node | None, default: str) -> str:
    if node is None:
        return default
    text = node.as_str()
    if not _CLAIM_PATH.fullmatch(text):
        raise node.error(
            f"claim path {text!r} is not valid",
            "write a claim name, or a dotted path to a nested one (e.g. realm_access.roles)",
        )
    return text


def _permissions(node: Node) -> tuple[tuple[str, ...], PermissionMode]:
    if isinstance(node.value, list):
        items, mode, where = node.as_list(allow_empty=False), PermissionMode.ANY_OF, node
    elif not isinstance(node.value, dict):
        raise node.error(
            f"expected a list or a mapping, got {type(node.value).__name__}",
            "write a list (any of them), or `{any_of: [a, b]}` or `{all_of: [a, b]}`",
        )
    else:
        f = node.as_mapping(("any_of", "all_of"))
        keys = [k for k in ("any_of", "all_of") if k in f]
        if len(keys) != 1:
            raise node.error(
                "permissions need exactly one of any_of or all_of",
                "write `permissions: {any_of: [a, b]}` or `permissions: {all_of: [a, b]}`",
            )
        mode = PermissionMode(keys[0])
        where = node.child(keys[0])
        items = where.as_list(allow_empty=False)
    perms = tuple(n.as_str() for n in items)
    for i, p in enumerate(perms):
        if p != p.strip():
            raise where.item(i).error(
                f"permission {p!r} has surrounding spaces", "permissions compare exactly"
            )
    return perms, mode


def _principal(node: Node) -> PrincipalPattern:
    text = node.as_str()
    kind_text, sep, value = text.partition(":")
    if not sep or not value:
        raise node.error(f"{text!r} is not a principal pattern", _PATTERN_FIX)
    kind_text, at, issuer = kind_text.partition("@")
    try:
        kind = PrincipalKind(kind_text)
    except ValueError:
        raise node.error(f"unknown principal kind {kind_text!r}", _PATTERN_FIX) from None
    if at and (kind in _CERT_KINDS or not issuer):
        raise node.error(
            f"{text!r}: only token patterns take an issuer, as sub@<issuer>:... or "
            "group@<issuer>:...",
            _PATTERN_FIX,
        )
    prefix = value.endswith("*")
    value = value[:-1] if prefix else value
    if "*" in value:
        raise node.error(f"{text!r} has a * that is not at the end", _PATTERN_FIX)
    if kind is PrincipalKind.DNS:
        value = value.lower()
    return PrincipalPattern(kind, value, prefix, issuer if at else None)

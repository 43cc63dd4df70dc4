"""Tests for kedge.edge.config_auth: the `auth:` section, route `auth:` blocks, listener mTLS.

Written in the style of test_config_parser.py: YAML-shaped dicts through parse_edge_config,
good ones compared with the dataclasses they must become, bad ones checked for the key path,
the problem and the fix. File paths (`@ca`, `@cert`, ...) are filled in from a test PKI.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kedge.core.errors import ConfigError
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
from kedge.edge.config_parser import parse_edge_config
from tests.support.pki import TestPki

BASE: dict[str, Any] = {
    "listeners": [{"name": "http", "address": "127.0.0.1:8080"}],
    "backends": [{"name": "demo", "resolver": {"static": {"endpoints": ["127.0.0.1:9000"]}}}],
    "routes": [{"name": "demo", "backend": "demo", "match": {"host": "demo.test"}}],
}
ISSUER: dict[str, Any] = {"name": "corp", "issuer": "https://idp.test", "audiences": ["kedge"]}
CORP = IssuerConfig("corp", "https://idp.test", ("kedge",))


def _with(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(overrides)
    return data


def _auth(**keys: Any) -> dict[str, Any]:
    """BASE with an `auth:` section of `keys`."""
    return _with(auth=keys)


def _issuer(**keys: Any) -> dict[str, Any]:
    """BASE with `auth.issuers` = [ISSUER updated with `keys`]; a None value drops the key."""
    issuer = {k: v for k, v in {**ISSUER, **keys}.items() if v is not None}
    return _auth(issuers=[issuer])


def _route_auth(auth: Any, *, issuers: bool = True, **top: Any) -> dict[str, Any]:
    """BASE whose route has `auth`, with an `auth:` section (holding ISSUER unless not
    `issuers`) updated with `top`."""
    data = _with(routes=[{"name": "r", "backend": "demo", "auth": auth}])
    data["auth"] = {**({"issuers": [dict(ISSUER)]} if issuers else {}), **top}
    return data


def _mtls(client_certs: Any, **listener: Any) -> dict[str, Any]:
    """BASE with a TLS listener whose `tls.client_certs` is `client_certs` (None: no block)."""
    tls: dict[str, Any] = {"cert_file": "@cert", "key_file": "@key"}
    if client_certs is not None:
        tls["client_certs"] = client_certs
    return _with(listeners=[{"name": "tls", "address": "127.0.0.1:8443", "tls": tls, **listener}])


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    pki = TestPki.create(tmp_path_factory.mktemp("pki"))
    return {
        "@cert": str(pki.server.chain),
        "@key": str(pki.server.key),
        "@ca": str(pki.ca.cert),
        "@ca2": str(pki.other_ca.cert),
        "@crl": str(pki.crl),
        "@not-a-ca": str(pki.client.key),
        "@missing": str(Path(pki.directory) / "missing.pem"),
    }


def _fill(value: Any, paths: dict[str, str]) -> Any:
    if isinstance(value, str):
        return paths.get(value, value)
    if isinstance(value, list):
        return [_fill(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, paths) for k, v in value.items()}
    return value


def _parse(data: object, paths: dict[str, str]) -> EdgeConfig:
    return parse_edge_config(_fill(data, paths), "edge.yaml")


def _pattern(kind: PrincipalKind, value: str, prefix: bool = False) -> PrincipalPattern:
    return PrincipalPattern(kind, value, prefix)


# --- good configs ----------------------------------------------------------------------------

GOOD: list[tuple[str, dict[str, Any], Any, Any]] = [
    # (id, data, what to look at, expected; a callable expected gets the paths)
    ("no auth section", BASE, lambda c: (c.auth, c.routes[0].auth), (None, None)),
    ("empty auth section", _auth(), lambda c: c.auth, AuthConfig()),
    ("issuer with defaults", _issuer(), lambda c: c.auth.issuers, (CORP,)),
    (
        "issuer with every key",
        _issuer(
            audiences=["kedge", "kedge-api"],
            jwks_url="https://idp.test/keys",
            algorithms=["RS256", "ES256", "PS512", "EdDSA"],
            permissions_claim="kedge.perms",
            groups_claim="https://kedge.test/groups",
            leeway="30s",
            max_lifetime=0,
            jwks_ttl="1m",
            jwks_max_stale="2h",
            unknown_kid_cooldown="10s",
            fetch_timeout="2s",
            ca_file="@ca",
        ),
        lambda c: c.auth.issuers[0],
        lambda p: IssuerConfig(
            "corp",
            "https://idp.test",
            ("kedge", "kedge-api"),
            jwks_url="https://idp.test/keys",
            algorithms=("RS256", "ES256", "PS512", "EdDSA"),
            permissions_claim="kedge.perms",
            groups_claim="https://kedge.test/groups",
            leeway=30.0,
            max_lifetime=0.0,
            jwks_ttl=60.0,
            jwks_max_stale=7200.0,
            unknown_kid_cooldown=10.0,
            fetch_timeout=2.0,
            ca_file=p["@ca"],
        ),
    ),
    (
        "discovery_url",
        _issuer(discovery_url="https://meta.idp.test/.well-known/openid-configuration"),
        lambda c: (c.auth.issuers[0].discovery_url, c.auth.issuers[0].jwks_url),
        ("https://meta.idp.test/.well-known/openid-configuration", None),
    ),
    (
        "issuer with a path",
        _issuer(issuer="https://idp.test/realms/corp"),
        lambda c: c.auth.issuers[0].issuer,
        "https://idp.test/realms/corp",
    ),
    (
        "http on 127.0.0.1",
        _issuer(issuer="http://127.0.0.1:8080", jwks_url="http://127.0.0.1:8080/jwks"),
        lambda c: (c.auth.issuers[0].issuer, c.auth.issuers[0].jwks_url),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/jwks"),
    ),
    (
        "http on 127.x",
        _issuer(issuer="http://127.1.2.3"),
        lambda c: c.auth.issuers[0].issuer,
        "http://127.1.2.3",
    ),
    (
        "http on [::1]",
        _issuer(issuer="http://[::1]:9000"),
        lambda c: c.auth.issuers[0].issuer,
        "http://[::1]:9000",
    ),
    (
        "http on localhost",
        _issuer(issuer="http://localhost:9000"),
        lambda c: c.auth.issuers[0].issuer,
        "http://localhost:9000",
    ),
    (
        "two issuers",
        _auth(
            issuers=[ISSUER, {"name": "ops.2", "issuer": "https://ops.test", "audiences": ["a"]}]
        ),
        lambda c: tuple(i.name for i in c.auth.issuers),
        ("corp", "ops.2"),
    ),
    (
        "auth section keys",
        _auth(
            max_token_bytes="16KiB",
            token_cache_size=0,
            identity_header="X-Kedge-Principal",
            strip_headers=["X-User", "x-groups"],
        ),
        lambda c: c.auth,
        AuthConfig(
            max_token_bytes=16 * 1024,
            token_cache_size=0,
            identity_header="x-kedge-principal",
            strip_headers=("x-user", "x-groups"),
        ),
    ),
    (
        "route: anonymous",
        _route_auth({"anonymous": True}),
        lambda c: c.routes[0].auth,
        RouteAuth(anonymous=True),
    ),
    (
        "route: anonymous false alone",
        _route_auth({"anonymous": False}),
        lambda c: c.routes[0].auth,
        RouteAuth(),
    ),
    ("route: empty block", _route_auth({}), lambda c: c.routes[0].auth, RouteAuth()),
    (
        "route: permissions list is any_of",
        _route_auth({"permissions": ["svc.read", "svc.admin"]}),
        lambda c: c.routes[0].auth,
        RouteAuth(permissions=("svc.read", "svc.admin"), permission_mode=PermissionMode.ANY_OF),
    ),
    (
        "route: permissions any_of",
        _route_auth({"permissions": {"any_of": ["a"]}}),
        lambda c: c.routes[0].auth,
        RouteAuth(permissions=("a",), permission_mode=PermissionMode.ANY_OF),
    ),
    (
        "route: permissions all_of",
        _route_auth({"permissions": {"all_of": ["a", "b"]}}),
        lambda c: c.routes[0].auth,
        RouteAuth(permissions=("a", "b"), permission_mode=PermissionMode.ALL_OF),
    ),
    (
        "route: token principals",
        _route_auth({"principals": ["sub:svc-a", "group:ops*", "sub:a:b"]}),
        lambda c: c.routes[0].auth.principals,
        (
            _pattern(PrincipalKind.SUB, "svc-a"),
            _pattern(PrincipalKind.GROUP, "ops", prefix=True),
            _pattern(PrincipalKind.SUB, "a:b"),
        ),
    ),
    (
        "route: token principals scoped to an issuer",
        _route_auth({"principals": ["sub@corp:alice", "group@corp:ops*", "sub@corp:a@b"]}),
        lambda c: c.routes[0].auth.principals,
        (
            PrincipalPattern(PrincipalKind.SUB, "alice", issuer="corp"),
            PrincipalPattern(PrincipalKind.GROUP, "ops", prefix=True, issuer="corp"),
            PrincipalPattern(PrincipalKind.SUB, "a@b", issuer="corp"),
        ),
    ),
    (
        "route: permissions and principals",
        _route_auth({"permissions": ["p"], "principals": ["sub:x"]}),
        lambda c: c.routes[0].auth,
        RouteAuth(permissions=("p",), principals=(_pattern(PrincipalKind.SUB, "x"),)),
    ),
    (
        "route: certificate principals with an mTLS listener",
        {
            **_mtls({"ca_files": ["@ca"]}),
            "routes": [
                {
                    "backend": "demo",
                    "auth": {
                        "principals": [
                            "uri:spiffe://cluster.test/ns/apps/*",
                            "dns:Client-A.Test",
                            "cn:Client-A",
                            "subject:CN=client-a,O=kedge tests",
                            "uri:*",
                        ]
                    },
                }
            ],
            "auth": {},
        },
        lambda c: c.routes[0].auth.principals,
        (
            _pattern(PrincipalKind.URI, "spiffe://cluster.test/ns/apps/", prefix=True),
            _pattern(PrincipalKind.DNS, "client-a.test"),  # DNS names compare lower-case
            _pattern(PrincipalKind.CN, "Client-A"),  # a CN is compared as written
            _pattern(PrincipalKind.SUBJECT, "CN=client-a,O=kedge tests"),
            _pattern(PrincipalKind.URI, "", prefix=True),
        ),
    ),
    (
        "default_route and adhoc",
        _auth(
            issuers=[ISSUER],
            default_route={"permissions": {"all_of": ["x"]}},
            adhoc={"anonymous": True},
        ),
        lambda c: (c.auth.default_route, c.auth.adhoc),
        (
            RouteAuth(permissions=("x",), permission_mode=PermissionMode.ALL_OF),
            RouteAuth(anonymous=True),
        ),
    ),
    (
        "routes without a block keep None (default_route applies at run time)",
        _route_auth({"anonymous": True})
        | {"routes": [{"backend": "demo"}, {"backend": "demo", "auth": {}}]},
        lambda c: (c.routes[0].auth, c.routes[1].auth),
        (None, RouteAuth()),
    ),
    (
        "client_certs: mode defaults to required",
        _mtls({"ca_files": ["@ca", "@ca2"]}),
        lambda c: c.listeners[0].tls.client_certs,
        lambda p: ClientCertConfig(ClientCertMode.REQUIRED, (p["@ca"], p["@ca2"])),
    ),
    (
        "client_certs: every key",
        _mtls({"mode": "optional", "ca_files": ["@ca"], "crl_files": ["@crl"], "no_eku": "accept"}),
        lambda c: c.listeners[0].tls.client_certs,
        lambda p: ClientCertConfig(
            ClientCertMode.OPTIONAL, (p["@ca"],), (p["@crl"],), NoEkuPolicy.ACCEPT
        ),
    ),
    (
        "client_certs: off needs no CA",
        _mtls({"mode": "off"}),
        lambda c: c.listeners[0].tls.client_certs,
        ClientCertConfig(),
    ),
    (
        "no client_certs block",
        _mtls(None),
        lambda c: c.listeners[0].tls.client_certs,
        ClientCertConfig(),
    ),
    (
        "require_sni_match",
        _with(
            listeners=[
                {
                    "address": "127.0.0.1:8443",
                    "tls": {"cert_file": "@cert", "key_file": "@key", "require_sni_match": True},
                }
            ]
        ),
        lambda c: c.listeners[0].tls.require_sni_match,
        True,
    ),
    (
        "credentials default",
        BASE,
        lambda c: c.listeners[0].credentials,
        (CredentialSource.PROXY_AUTHORIZATION,),
    ),
    (
        "credentials in order",
        _with(
            listeners=[
                {"address": "127.0.0.1:80", "credentials": ["authorization", "proxy_authorization"]}
            ]
        ),
        lambda c: c.listeners[0].credentials,
        (CredentialSource.AUTHORIZATION, CredentialSource.PROXY_AUTHORIZATION),
    ),
]


@pytest.mark.parametrize(
    ("data", "pick", "expected"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD]
)
def test_good_auth_configs(
    data: dict[str, Any], pick: Any, expected: Any, paths: dict[str, str]
) -> None:
    assert pick(_parse(data, paths)) == (expected(paths) if callable(expected) else expected)


# --- bad configs -------------------------------------------------------------------------------

BAD: list[tuple[str, object, str, str, str]] = [
    # (id, data, key path, problem substring, fix substring)
    # -- issuers
    (
        "alg HS256",
        _issuer(algorithms=["RS256", "HS256"]),
        "auth.issuers[0].algorithms[1]",
        "algorithm 'HS256' is not accepted",
        "asymmetric algorithms only",
    ),
    (
        "alg none",
        _issuer(algorithms=["none"]),
        "auth.issuers[0].algorithms[0]",
        "algorithm 'none'",
        "RS256",
    ),
    (
        "alg HS512",
        _issuer(algorithms=["HS512"]),
        "auth.issuers[0].algorithms[0]",
        "'HS512'",
        "EdDSA",
    ),
    (
        "alg in lower case",
        _issuer(algorithms=["rs256"]),
        "auth.issuers[0].algorithms[0]",
        "'rs256'",
        "RS256",
    ),
    (
        "alg not a string",
        _issuer(algorithms=[256]),
        "auth.issuers[0].algorithms[0]",
        "expected a string",
        "write a string",
    ),
    (
        "issuer over plain http",
        _issuer(issuer="http://idp.test"),
        "auth.issuers[0].issuer",
        "uses plain http",
        "use https",
    ),
    (
        "jwks_url over plain http",
        _issuer(jwks_url="http://idp.test/jwks"),
        "auth.issuers[0].jwks_url",
        "plain http",
        "https",
    ),
    (
        "discovery_url over plain http",
        _issuer(discovery_url="http://idp.test/d"),
        "auth.issuers[0].discovery_url",
        "plain http",
        "https",
    ),
    (
        "http to a private address",
        _issuer(issuer="http://10.0.0.1"),
        "auth.issuers[0].issuer",
        "plain http",
        "loopback",
    ),
    (
        "http to a loopback-looking name",
        _issuer(issuer="http://localhost.evil.test"),
        "auth.issuers[0].issuer",
        "plain http",
        "https",
    ),
    (
        "http to 0.0.0.0",
        _issuer(issuer="http://0.0.0.0:80"),
        "auth.issuers[0].issuer",
        "plain http",
        "https",
    ),
    (
        "issuer without scheme",
        _issuer(issuer="idp.test"),
        "auth.issuers[0].issuer",
        "is not an http(s) URL",
        "https://",
    ),
    (
        "issuer ftp",
        _issuer(issuer="ftp://idp.test"),
        "auth.issuers[0].issuer",
        "not an http(s) URL",
        "https://",
    ),
    (
        "issuer without host",
        _issuer(issuer="https:///x"),
        "auth.issuers[0].issuer",
        "not an http(s) URL",
        "https://",
    ),
    (
        "issuer with a query",
        _issuer(issuer="https://idp.test/?tenant=a"),
        "auth.issuers[0].issuer",
        "parts a provider URL cannot have",
        "remove",
    ),
    (
        "jwks_url with a fragment",
        _issuer(jwks_url="https://idp.test/jwks#k"),
        "auth.issuers[0].jwks_url",
        "cannot have",
        "remove",
    ),
    (
        "issuer with a broken IPv6 host",
        _issuer(issuer="https://[::1"),
        "auth.issuers[0].issuer",
        "not an http(s) URL",
        "https://",
    ),
    (
        "issuer with a bad port",
        _issuer(issuer="https://idp.test:99999"),
        "auth.issuers[0].issuer",
        "not an http(s) URL",
        "https://",
    ),
    (
        "issuer not a string",
        _issuer(issuer=["https://idp.test"]),
        "auth.issuers[0].issuer",
        "expected a string",
        "write a string",
    ),
    (
        "jwks_url and discovery_url",
        _issuer(jwks_url="https://idp.test/k", discovery_url="https://idp.test/d"),
        "auth.issuers[0].discovery_url",
        "both jwks_url and discovery_url",
        "keep one",
    ),
    (
        "issuer missing name",
        _issuer(name=None),
        "auth.issuers[0].name",
        "missing required key 'name'",
        "name: corp",
    ),
    (
        "issuer missing issuer",
        _issuer(issuer=None),
        "auth.issuers[0].issuer",
        "missing required key 'issuer'",
        "`iss`",
    ),
    (
        "issuer missing audiences",
        _issuer(audiences=None),
        "auth.issuers[0].audiences",
        "missing required key",
        "[kedge]",
    ),
    (
        "issuer empty audiences",
        _issuer(audiences=[]),
        "auth.issuers[0].audiences",
        "the list is empty",
        "add at least one",
    ),
    (
        "issuer audiences a string",
        _issuer(audiences="kedge"),
        "auth.issuers[0].audiences",
        "expected a list",
        "YAML list",
    ),
    (
        "issuer empty audience",
        _issuer(audiences=[""]),
        "auth.issuers[0].audiences[0]",
        "must not be empty",
        "write a value",
    ),
    (
        "issuer name upper case",
        _issuer(name="Corp"),
        "auth.issuers[0].name",
        "issuer name 'Corp' is not valid",
        "lower-case",
    ),
    (
        "issuer name with a slash",
        _issuer(name="corp/a"),
        "auth.issuers[0].name",
        "not valid",
        "lower-case",
    ),
    (
        "issuer name too long",
        _issuer(name="a" * 64),
        "auth.issuers[0].name",
        "not valid",
        "lower-case",
    ),
    (
        "permissions_claim empty segment",
        _issuer(permissions_claim="a..b"),
        "auth.issuers[0].permissions_claim",
        "claim path 'a..b' is not valid",
        "dotted path",
    ),
    (
        "groups_claim with a space",
        _issuer(groups_claim="realm roles"),
        "auth.issuers[0].groups_claim",
        "claim path",
        "realm_access.roles",
    ),
    (
        "jwks_ttl zero",
        _issuer(jwks_ttl=0),
        "auth.issuers[0].jwks_ttl",
        "must be greater than zero",
        "positive duration",
    ),
    (
        "fetch_timeout zero",
        _issuer(fetch_timeout="0s"),
        "auth.issuers[0].fetch_timeout",
        "greater than zero",
        "positive",
    ),
    (
        "leeway not a duration",
        _issuer(leeway="a minute"),
        "auth.issuers[0].leeway",
        "is not a duration",
        '"10s"',
    ),
    (
        "ca_file missing",
        _issuer(ca_file="@missing"),
        "auth.issuers[0].ca_file",
        "does not exist",
        "existing file",
    ),
    (
        "issuer unknown key",
        _issuer(audience=["kedge"]),
        "auth.issuers[0].audience",
        "unknown key 'audience'",
        "did you mean 'audiences'",
    ),
    ("issuers not a list", _auth(issuers=ISSUER), "auth.issuers", "expected a list", "YAML list"),
    (
        "duplicate issuer names",
        _auth(issuers=[ISSUER, {**ISSUER, "issuer": "https://other.test"}]),
        "auth.issuers[1].name",
        "duplicate issuer name 'corp' (also auth.issuers[0].name)",
        "unique name",
    ),
    (
        "duplicate iss",
        _auth(issuers=[ISSUER, {**ISSUER, "name": "corp2", "audiences": ["other"]}]),
        "auth.issuers[1].issuer",
        "issuer 'https://idp.test' is configured twice (also auth.issuers[0])",
        "merge the two entries",
    ),
    # -- auth section
    (
        "auth unknown key",
        _auth(issuer=[ISSUER]),
        "auth.issuer",
        "unknown key 'issuer'",
        "did you mean 'issuers'",
    ),
    ("auth not a mapping", _with(auth=[ISSUER]), "auth", "expected a mapping", "key: value"),
    (
        "max_token_bytes zero",
        _auth(max_token_bytes=0),
        "auth.max_token_bytes",
        "greater than zero",
        "positive size",
    ),
    (
        "token_cache_size negative",
        _auth(token_cache_size=-1),
        "auth.token_cache_size",
        "below the minimum 0",
        "at least 0",
    ),
    (
        "identity_header with a space",
        _auth(identity_header="x kedge"),
        "auth.identity_header",
        "'x kedge' is not a valid header name",
        "letters",
    ),
    (
        "identity_header with a colon",
        _auth(identity_header="x-kedge:"),
        "auth.identity_header",
        "not a valid header name",
        "letters",
    ),
    (
        "strip_headers entry invalid",
        _auth(strip_headers=["x-ok", "x\ny"]),
        "auth.strip_headers[1]",
        "not a valid header name",
        "letters",
    ),
    # -- route auth blocks
    (
        "anonymous with permissions",
        _route_auth({"anonymous": True, "permissions": ["a"]}),
        "routes[0].auth.anonymous",
        "an anonymous route cannot also require permissions or principals",
        "remove `anonymous: true`",
    ),
    (
        "anonymous with principals",
        _route_auth({"anonymous": True, "principals": ["sub:a"]}),
        "routes[0].auth.anonymous",
        "cannot also require",
        "remove `permissions` and `principals`",
    ),
    (
        "default_route anonymous with permissions",
        _auth(
            issuers=[ISSUER], default_route={"anonymous": True, "permissions": {"all_of": ["a"]}}
        ),
        "auth.default_route.anonymous",
        "cannot also require",
        "anonymous",
    ),
    (
        "adhoc anonymous with principals",
        _auth(issuers=[ISSUER], adhoc={"anonymous": True, "principals": ["group:a"]}),
        "auth.adhoc.anonymous",
        "cannot also require",
        "anonymous",
    ),
    (
        "anonymous not a bool",
        _route_auth({"anonymous": "yes"}),
        "routes[0].auth.anonymous",
        "expected true or false",
        "true or false",
    ),
    (
        "route auth unknown key",
        _route_auth({"permission": ["a"]}),
        "routes[0].auth.permission",
        "unknown key 'permission'",
        "did you mean 'permissions'",
    ),
    (
        "route auth not a mapping",
        _route_auth(["a"]),
        "routes[0].auth",
        "expected a mapping",
        "key: value",
    ),
    (
        "permissions empty list",
        _route_auth({"permissions": []}),
        "routes[0].auth.permissions",
        "the list is empty",
        "add at least one",
    ),
    (
        "permissions empty mapping",
        _route_auth({"permissions": {}}),
        "routes[0].auth.permissions",
        "exactly one of any_of or all_of",
        "all_of: [a, b]",
    ),
    (
        "permissions any_of and all_of",
        _route_auth({"permissions": {"any_of": ["a"], "all_of": ["b"]}}),
        "routes[0].auth.permissions",
        "exactly one of any_of or all_of",
        "any_of: [a, b]",
    ),
    (
        "permissions unknown mode",
        _route_auth({"permissions": {"one_of": ["a"]}}),
        "routes[0].auth.permissions.one_of",
        "unknown key 'one_of'",
        "any_of",
    ),
    (
        "permissions all_of empty",
        _route_auth({"permissions": {"all_of": []}}),
        "routes[0].auth.permissions.all_of",
        "the list is empty",
        "add at least one",
    ),
    (
        "permission with a trailing space",
        _route_auth({"permissions": ["ok", "admin "]}),
        "routes[0].auth.permissions[1]",
        "'admin ' has surrounding spaces",
        "compare exactly",
    ),
    (
        "permission with a leading space",
        _route_auth({"permissions": {"all_of": [" a"]}}),
        "routes[0].auth.permissions.all_of[0]",
        "surrounding spaces",
        "exactly",
    ),
    (
        "permission empty",
        _route_auth({"permissions": [""]}),
        "routes[0].auth.permissions[0]",
        "must not be empty",
        "write a value",
    ),
    (
        "permission not a string",
        _route_auth({"permissions": [7]}),
        "routes[0].auth.permissions[0]",
        "expected a string",
        "quote it",
    ),
    (
        "permissions a bare string",
        _route_auth({"permissions": "svc.read"}),
        "routes[0].auth.permissions",
        "expected a list or a mapping, got str",
        "write a list (any of them), or `{any_of: [a, b]}`",
    ),
    (
        "principals not a list",
        _route_auth({"principals": "sub:a"}),
        "routes[0].auth.principals",
        "expected a list",
        "YAML list",
    ),
    (
        "principal without a kind",
        _route_auth({"principals": ["svc-a"]}),
        "routes[0].auth.principals[0]",
        "'svc-a' is not a principal pattern",
        "kind:value",
    ),
    (
        "principal without a value",
        _route_auth({"principals": ["sub:"]}),
        "routes[0].auth.principals[0]",
        "is not a principal pattern",
        "kind:value",
    ),
    (
        "principal unknown kind",
        _route_auth({"principals": ["sub:a", "email:a@x.test"]}),
        "routes[0].auth.principals[1]",
        "unknown principal kind 'email'",
        "uri, dns, cn, subject",
    ),
    (
        "principal kind upper case",
        _route_auth({"principals": ["SUB:a"]}),
        "routes[0].auth.principals[0]",
        "unknown principal kind 'SUB'",
        "sub, group",
    ),
    (
        "principal spiffe id without uri:",
        _route_auth({"principals": ["spiffe://cluster.test/a"]}),
        "routes[0].auth.principals[0]",
        "unknown principal kind 'spiffe'",
        "kind:value",
    ),
    (
        "principal scoped to an unknown issuer",
        _route_auth({"principals": ["sub@other:alice"]}),
        "routes[0].auth.principals",
        "names the issuer 'other', which is not configured",
        "auth.issuers`: corp",
    ),
    (
        "certificate principal with an issuer",
        _route_auth({"principals": ["uri@corp:spiffe://x.test/a"]}),
        "routes[0].auth.principals[0]",
        "only token patterns take an issuer",
        "sub@<issuer>:value",
    ),
    (
        "principal with an empty issuer",
        _route_auth({"principals": ["sub@:alice"]}),
        "routes[0].auth.principals[0]",
        "only token patterns take an issuer",
        "kind:value",
    ),
    (
        "principal * in the middle",
        _route_auth({"principals": ["group:a*b"]}),
        "routes[0].auth.principals[0]",
        "has a * that is not at the end",
        "trailing * matches a prefix",
    ),
    (
        "principal two stars",
        _route_auth({"principals": ["group:a**"]}),
        "routes[0].auth.principals[0]",
        "not at the end",
        "prefix",
    ),
    (
        "principal not a string",
        _route_auth({"principals": [{"sub": "a"}]}),
        "routes[0].auth.principals[0]",
        "expected a string",
        "write a string",
    ),
    # -- consistency across sections
    (
        "route auth without an auth section",
        _with(routes=[{"backend": "demo", "auth": {"anonymous": True}}]),
        "routes[0].auth",
        "no top-level `auth:` section",
        "add `auth:`",
    ),
    (
        "second route with auth, no auth section",
        _with(routes=[{"backend": "demo"}, {"backend": "demo", "auth": {}}]),
        "routes[1].auth",
        "no top-level `auth:` section",
        "anonymous: true",
    ),
    (
        "route permissions without issuers",
        _route_auth({"permissions": ["a"]}, issuers=False),
        "routes[0].auth.permissions",
        "permissions come from tokens, but no issuer is configured",
        "auth.issuers",
    ),
    (
        "default_route permissions without issuers",
        _auth(default_route={"permissions": ["a"]}),
        "auth.default_route.permissions",
        "no issuer is configured",
        "auth.issuers",
    ),
    (
        "adhoc permissions without issuers",
        _auth(adhoc={"permissions": {"all_of": ["a"]}}),
        "auth.adhoc.permissions",
        "no issuer",
        "auth.issuers",
    ),
    (
        "token principal without issuers",
        _route_auth({"principals": ["sub:svc-a"]}, issuers=False),
        "routes[0].auth.principals",
        "sub:svc-a names a token claim, but no issuer is configured",
        "auth.issuers",
    ),
    (
        "group principal in default_route without issuers",
        _auth(default_route={"principals": ["group:ops*"]}),
        "auth.default_route.principals",
        "group:ops* names a token claim",
        "auth.issuers",
    ),
    (
        "cert principal without any TLS listener",
        _route_auth({"principals": ["uri:spiffe://cluster.test/*"]}),
        "routes[0].auth.principals",
        "uri:spiffe://cluster.test/* names a client certificate, but no listener asks for one",
        "tls.client_certs",
    ),
    (
        "cert principal with a TLS listener without client_certs",
        _mtls(None)
        | {"routes": [{"backend": "demo", "auth": {"principals": ["cn:a"]}}], "auth": {}},
        "routes[0].auth.principals",
        "cn:a names a client certificate",
        "tls.client_certs",
    ),
    (
        "cert principal with client_certs off",
        _mtls({"mode": "off"})
        | {"routes": [{"backend": "demo", "auth": {"principals": ["dns:a.test"]}}], "auth": {}},
        "routes[0].auth.principals",
        "no listener asks for one",
        "tls.client_certs",
    ),
    (
        "cert principal in adhoc without client_certs",
        _auth(adhoc={"principals": ["subject:CN=a"]}),
        "auth.adhoc.principals",
        "subject:CN=a names a client certificate",
        "tls.client_certs",
    ),
    # -- listener mTLS and credentials
    (
        "client_certs without ca_files",
        _mtls({}),
        "listeners[0].tls.client_certs.ca_files",
        "no CA is given",
        "ca_files",
    ),
    (
        "client_certs optional without ca_files",
        _mtls({"mode": "optional"}),
        "listeners[0].tls.client_certs.ca_files",
        "no CA is given",
        "PEM files of the CAs",
    ),
    (
        "client_certs empty ca_files",
        _mtls({"ca_files": []}),
        "listeners[0].tls.client_certs.ca_files",
        "no CA is given",
        "ca_files",
    ),
    (
        "client_certs only crl_files",
        _mtls({"crl_files": ["@crl"]}),
        "listeners[0].tls.client_certs.ca_files",
        "no CA",
        "ca_files",
    ),
    (
        "client_certs bad mode",
        _mtls({"mode": "require", "ca_files": ["@ca"]}),
        "listeners[0].tls.client_certs.mode",
        "'require' is not a valid choice",
        "did you mean 'required'",
    ),
    (
        "client_certs mode true",
        _mtls({"mode": True, "ca_files": ["@ca"]}),
        "listeners[0].tls.client_certs.mode",
        "not a valid choice",
        "off, optional, required",
    ),
    (
        "client_certs bad no_eku",
        _mtls({"ca_files": ["@ca"], "no_eku": "allow"}),
        "listeners[0].tls.client_certs.no_eku",
        "'allow' is not a valid choice",
        "reject, accept",
    ),
    (
        "client_certs unknown key",
        _mtls({"ca_file": "@ca"}),
        "listeners[0].tls.client_certs.ca_file",
        "unknown key 'ca_file'",
        "did you mean 'ca_files'",
    ),
    (
        "client_certs missing CA file",
        _mtls({"ca_files": ["@ca", "@missing"]}),
        "listeners[0].tls.client_certs.ca_files[1]",
        "does not exist",
        "existing file",
    ),
    (
        "client_certs missing CRL file",
        _mtls({"ca_files": ["@ca"], "crl_files": ["@missing"]}),
        "listeners[0].tls.client_certs.crl_files[0]",
        "does not exist",
        "existing file",
    ),
    (
        "client_certs CA file is a key",
        _mtls({"ca_files": ["@not-a-ca"]}),
        "listeners[0].tls.client_certs.ca_files[0]",
        "holds no PEM certificates",
        "CA certificates under `ca_files`",
    ),
    (
        "client_certs CRL listed as a CA",
        _mtls({"ca_files": ["@ca", "@crl"]}),
        "listeners[0].tls.client_certs.ca_files[1]",
        "holds no PEM certificates",
        "CRLs under `crl_files`",
    ),
    (
        "client_certs CA listed as a CRL",
        _mtls({"ca_files": ["@ca"], "crl_files": ["@ca"]}),
        "listeners[0].tls.client_certs.crl_files[0]",
        "holds no PEM CRLs",
        "CRLs under `crl_files`",
    ),
    (
        "client_certs ca_files a string",
        _mtls({"ca_files": "@ca"}),
        "listeners[0].tls.client_certs.ca_files",
        "expected a list",
        "YAML list",
    ),
    (
        "credentials empty",
        _with(listeners=[{"address": "127.0.0.1:80", "credentials": []}]),
        "listeners[0].credentials",
        "the list is empty",
        "add at least one",
    ),
    (
        "credentials twice",
        _with(
            listeners=[
                {"address": "127.0.0.1:80", "credentials": ["authorization", "authorization"]}
            ]
        ),
        "listeners[0].credentials",
        "a credential source is listed twice",
        "list each source once",
    ),
    (
        "credentials unknown source",
        _with(listeners=[{"address": "127.0.0.1:80", "credentials": ["cookie"]}]),
        "listeners[0].credentials[0]",
        "'cookie' is not a valid choice",
        "proxy_authorization, authorization",
    ),
]


@pytest.mark.parametrize(
    ("data", "key_path", "problem", "fix"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_auth_configs_name_the_key_and_the_fix(
    data: object, key_path: str, problem: str, fix: str, paths: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(data, paths)
    err = info.value
    assert (err.key_path, err.file) == (key_path, "edge.yaml")
    assert problem in err.problem
    assert fix in err.fix
    assert err.problem and err.fix
    assert str(err) == f"edge.yaml: {key_path}: {err.problem} (fix: {err.fix})"

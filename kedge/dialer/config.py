"""The dialer's and winch's typed configuration: edge TLS, the mapper's routes, auth sources.

One YAML file configures both (`winch --config` and `kedge.dialer.load_dialer_config`); winch
reads its own `winch:` section on top. Everything here is frozen: a reload parses a new object.
Vocabulary: a *route* maps a requested name (`svc.ns.cluster-a.internal:8080`) to an *edge*
(that cluster's kedge) and names the auth sources whose credentials go with the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "AuthSourceConfig",
    "ClientCredentialsSourceConfig",
    "DialerConfig",
    "DirectRule",
    "EdgeTls",
    "KubeconfigSourceConfig",
    "MapRoute",
    "MatchRule",
    "OidcSourceConfig",
    "RegexpRule",
    "RouteProtocol",
    "StaticTokenSourceConfig",
    "SuffixRule",
    "TokenFileSourceConfig",
    "TokenKind",
    "Unmapped",
]


class RouteProtocol(Enum):
    """Which requests a route maps: plain HTTP, gRPC (HTTP/2 `application/grpc`), or both."""

    ANY = "any"
    HTTP = "http"
    GRPC = "grpc"


class Unmapped(Enum):
    """What winch and the dialer do with a name no route maps."""

    REFUSE = "refuse"  # 403 from winch, an error from the dialer (the safe default)
    DIRECT = "direct"  # connect straight to the name, with no credentials attached


@dataclass(frozen=True, slots=True)
class EdgeTls:
    """TLS to an edge: the CA that signs edges' certificates and an optional client certificate."""

    ca_file: str | None = None  # None: the system's trust store
    cert_file: str | None = None  # client certificate (mTLS to the edge), PEM
    key_file: str | None = None
    server_name: str | None = None  # name to verify instead of the edge URL's host


@dataclass(frozen=True, slots=True)
class DirectRule:
    """kEdge `direct`: exactly this name; any port when `port` is None, else only that one."""

    host: str  # lower case, no trailing dot
    port: int | None = None


@dataclass(frozen=True, slots=True)
class SuffixRule:
    """Any name ending in `suffix` (written `*.cluster-a.internal`, stored `.cluster-a.internal`);
    the bare suffix itself does not match. `ports` empty means any port."""

    suffix: str
    ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RegexpRule:
    """kEdge `regexp`: the pattern must match the whole `host:port` (always with the port, the
    default one filled in); named groups fill `${name}` in the route's edge URL."""

    pattern: re.Pattern[str]


MatchRule = DirectRule | SuffixRule | RegexpRule


@dataclass(frozen=True, slots=True)
class MapRoute:
    """One mapper route; routes are tried in order and the first match wins."""

    name: str  # `routes[2]` unless the YAML names it
    rule: MatchRule
    edge_url: str  # https://edge.cluster-a.test:8443; may hold ${group} for a regexp rule
    proxy_auth: str | None = None  # auth source name: Proxy-Authorization to the edge
    backend_auth: str | None = None  # auth source name: Authorization to the service
    protocol: RouteProtocol = RouteProtocol.ANY
    tls: EdgeTls | None = None  # overrides the top-level `edge_tls` for this route


class TokenKind(Enum):
    """Which OIDC token is the credential: kubectl and kEdge use the ID token."""

    ID_TOKEN = "id_token"
    ACCESS_TOKEN = "access_token"


@dataclass(frozen=True, slots=True)
class StaticTokenSourceConfig:
    name: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class TokenFileSourceConfig:
    """A bearer token read from a file and re-read when the file changes (rotation)."""

    name: str
    path: str


@dataclass(frozen=True, slots=True)
class KubeconfigSourceConfig:
    """A kubeconfig user: static token, client certificate, exec plugin or OIDC auth-provider."""

    name: str
    user: str
    path: str | None = None  # None: $KUBECONFIG, else ~/.kube/config


@dataclass(frozen=True, slots=True)
class OidcSourceConfig:
    """A user's OIDC login: a refresh token cached on disk (0600), and an interactive browser
    login (authorization code + PKCE on a loopback redirect, RFC 8252) when none is valid."""

    name: str
    issuer: str
    client_id: str
    client_secret_file: str | None = None  # public clients (PKCE only) have no secret
    scopes: tuple[str, ...] = ("openid", "offline_access")
    use: TokenKind = TokenKind.ID_TOKEN
    resource: str | None = None  # RFC 8707 resource indicator, for JWT access tokens
    cache_dir: str | None = None  # None: $XDG_CACHE_HOME/kedge or ~/.cache/kedge
    login: bool = True  # allow the interactive browser login
    login_timeout: float = 120.0


@dataclass(frozen=True, slots=True)
class ClientCredentialsSourceConfig:
    """A service account: the OAuth 2.0 client_credentials grant (RFC 6749 §4.4)."""

    name: str
    issuer: str  # discovery gives the token endpoint
    client_id: str
    client_secret_file: str
    scopes: tuple[str, ...] = ()
    resource: str | None = None


AuthSourceConfig = (
    StaticTokenSourceConfig
    | TokenFileSourceConfig
    | KubeconfigSourceConfig
    | OidcSourceConfig
    | ClientCredentialsSourceConfig
)


@dataclass(frozen=True, slots=True)
class DialerConfig:
    """Routes, auth sources and edge TLS: what winch and the dialer share."""

    source: str  # the file it came from, for messages
    routes: tuple[MapRoute, ...]
    auth_sources: dict[str, AuthSourceConfig]
    edge_tls: EdgeTls = EdgeTls()
    unmapped: Unmapped = Unmapped.REFUSE
    # Refresh a token this long before it expires (and never later than 80% of its life).
    refresh_margin: float = 60.0

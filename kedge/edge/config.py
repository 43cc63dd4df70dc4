"""EdgeConfig: the edge's whole configuration as frozen, validated dataclasses.

Built once from YAML by `kedge.edge.config_parser.load_edge_config`; a reload builds a new
EdgeConfig and the app swaps one reference. Every field here has a documented default and
unit in `configs/README.md`. Durations are float seconds, sizes are int bytes; 0 means
"no limit" only where the field's docstring says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from kedge.core.codec.h2_guard import FloodLimits
from kedge.core.net.pool_config import PoolConfig

__all__ = [
    "Address",
    "AdhocRule",
    "AdminConfig",
    "AuthConfig",
    "BackendConfig",
    "BackendTimeouts",
    "BackendTlsConfig",
    "Balancer",
    "ClientCertConfig",
    "ClientCertMode",
    "CredentialSource",
    "DiscoveryConfig",
    "DnsResolverConfig",
    "EdgeConfig",
    "GrpcHealthCheck",
    "HeaderMatch",
    "HealthCheckConfig",
    "HealthProbe",
    "Http2Config",
    "Http2FloodLimits",
    "HttpHealthCheck",
    "IssuerConfig",
    "K8sResolverConfig",
    "KubernetesConfig",
    "LimitsConfig",
    "ListenerConfig",
    "ListenerTls",
    "LocalityConfig",
    "NoEkuPolicy",
    "OutlierDetectionConfig",
    "PermissionMode",
    "PoolConfig",
    "PortRange",
    "PrincipalKind",
    "PrincipalPattern",
    "ProxyMode",
    "RemoteClusterConfig",
    "ResolverConfig",
    "RetryConfig",
    "RouteAuth",
    "RouteConfig",
    "RouteMatch",
    "SrvResolverConfig",
    "StaticEndpoint",
    "StaticResolverConfig",
    "TcpHealthCheck",
    "TimeoutsConfig",
    "UpstreamProtocol",
]


@dataclass(frozen=True, slots=True)
class Address:
    """A host (name or IP literal, IPv6 without brackets) and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class ProxyMode(Enum):
    """Which request forms a route accepts (RFC 9112 §3.2)."""

    REVERSE = "reverse"  # origin-form target plus Host
    FORWARD = "forward"  # absolute-form target (a client using the edge as HTTP proxy)
    ANY = "any"  # reverse or forward; never CONNECT (no route becomes a tunnel unasked)
    CONNECT = "connect"  # authority-form CONNECT (RFC 9110 §9.3.6): a byte tunnel


class UpstreamProtocol(Enum):
    """How the edge speaks to a backend's endpoints."""

    HTTP1 = "http1"  # HTTP/1.1, over TLS when the backend has `tls`
    H2 = "h2"  # HTTP/2 over TLS, negotiated by ALPN (RFC 9113 §3.2); needs `tls`
    H2C = "h2c"  # HTTP/2 over cleartext TCP with prior knowledge (RFC 9113 §3.3)


class Balancer(Enum):
    ROUND_ROBIN = "round_robin"
    # The less loaded of two random endpoints by requests in flight (Envoy's LEAST_REQUEST);
    # `p2c` is its older name.
    LEAST_REQUEST = "least_request"
    P2C = "p2c"
    # Two random endpoints, the one with the lower peak-EWMA latency x (in-flight + 1).
    P2C_EWMA = "p2c_ewma"


class ClientCertMode(Enum):
    """Whether a TLS listener asks clients for a certificate (mTLS)."""

    OFF = "off"
    OPTIONAL = "optional"  # verified when sent; requests without one may still authenticate
    REQUIRED = "required"  # the TLS handshake fails without a valid certificate


class NoEkuPolicy(Enum):
    """What a client certificate without an extendedKeyUsage extension is worth.

    OpenSSL accepts such a certificate for any purpose (RFC 5280 §4.2.1.12 says the
    extension is optional); the edge's default is to refuse it, so only certificates issued
    for client authentication identify clients.
    """

    REJECT = "reject"  # requests on the connection get 403 `permission-denied`
    ACCEPT = "accept"


class CredentialSource(Enum):
    """Where a listener looks for the edge's own bearer token (RFC 6750 §2.1)."""

    PROXY_AUTHORIZATION = "proxy_authorization"  # what winch sends; always the edge's
    AUTHORIZATION = "authorization"  # only a token addressed to the edge (iss and aud)


@dataclass(frozen=True, slots=True)
class ClientCertConfig:
    mode: ClientCertMode = ClientCertMode.OFF
    ca_files: tuple[str, ...] = ()  # PEM bundles of the CAs that issue client certificates
    crl_files: tuple[str, ...] = ()  # PEM CRLs; given: every leaf is checked (fail closed)
    no_eku: NoEkuPolicy = NoEkuPolicy.REJECT


@dataclass(frozen=True, slots=True)
class ListenerTls:
    cert_file: str
    key_file: str
    client_certs: ClientCertConfig = field(default_factory=ClientCertConfig)
    # Host (or :authority) must name the server the client asked for in SNI, else 421
    # (RFC 9110 §15.5.20): a connection set up for one name is not reused for another.
    require_sni_match: bool = False


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    name: str
    address: Address
    tls: ListenerTls | None = None  # None: plaintext HTTP
    credentials: tuple[CredentialSource, ...] = (CredentialSource.PROXY_AUTHORIZATION,)

    @property
    def scheme(self) -> Literal["http", "https"]:
        return "https" if self.tls else "http"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    address: Address = Address("127.0.0.1", 9901)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_uri_bytes: int = 8192  # request line target -> 414
    max_header_bytes: int = 65536  # whole header block -> 431
    max_header_count: int = 100  # -> 431
    max_request_body_bytes: int = 16 * 1024 * 1024  # -> 413; 0 = no limit
    max_pipelined_requests: int = 16  # queued behind the one in flight
    max_keepalive_requests: int = 1000  # per client connection, then Connection: close
    max_response_header_bytes: int = 65536  # from a backend -> 502
    max_connections: int = 10000  # client connections open at once, all listeners; 0 = none
    tunnel_idle_timeout: float = 3600.0  # CONNECT tunnel with no byte either way, seconds


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    request_header: float = 10.0  # first byte to end of headers, total -> 408
    request_body_idle: float = 60.0  # between body reads from a client -> 408
    keepalive_idle: float = 60.0  # idle client connection between requests
    drain: float = 25.0  # SIGTERM: how long in-flight requests may finish


# Abuse thresholds per client connection (the `http2.floods` section): defined next to the
# guard that enforces them, in the core.
Http2FloodLimits = FloodLimits


@dataclass(frozen=True, slots=True)
class Http2Config:
    """HTTP/2 on the client side (both listeners: ALPN `h2` on TLS, prior knowledge on
    plaintext) and the SETTINGS the edge advertises (RFC 9113 §6.5.2)."""

    enabled: bool = True
    max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS per connection
    initial_stream_window: int = 65536  # SETTINGS_INITIAL_WINDOW_SIZE, bytes
    initial_connection_window: int = 1024 * 1024  # raised by a WINDOW_UPDATE on stream 0
    max_header_list_size: int = 65536  # SETTINGS_MAX_HEADER_LIST_SIZE (decoded), bytes
    max_frame_size: int = 16384  # SETTINGS_MAX_FRAME_SIZE, 16384..16777215 bytes
    idle_timeout: float = 300.0  # a connection with no open stream is closed (GOAWAY)
    settings_timeout: float = 10.0  # our SETTINGS must be ACKed within this
    floods: Http2FloodLimits = field(default_factory=Http2FloodLimits)


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str  # lower-case
    exact: str | None = None
    regex: str | None = None  # full match (re.fullmatch)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    host: str | None = None  # exact (lower-case, no trailing dot) or "*.suffix"; None = any
    port: int | None = None  # None = any
    paths: tuple[str, ...] = ()  # "/exact", "/prefix/*", "/*"; empty = any path
    headers: tuple[HeaderMatch, ...] = ()  # also gRPC metadata (HTTP/2 header fields)
    proxy_mode: ProxyMode = ProxyMode.ANY
    # gRPC methods ("pkg.Service/Method", "pkg.Service/*", "pkg.Service", "pkg.*", "*");
    # non-empty: only gRPC requests (content-type application/grpc) match this route.
    grpc_methods: tuple[str, ...] = ()


class PermissionMode(Enum):
    ANY_OF = "any_of"
    ALL_OF = "all_of"


class PrincipalKind(Enum):
    """What a principal pattern compares: a certificate name or a token claim."""

    URI = "uri"  # a URI SAN of the client certificate, e.g. a SPIFFE ID
    DNS = "dns"  # a DNS SAN of the client certificate
    CN = "cn"  # the certificate subject's common name
    SUBJECT = "subject"  # the whole certificate subject, RFC 4514 form ("CN=a,O=b")
    SUB = "sub"  # the token's `sub` claim
    GROUP = "group"  # one of the token's groups


@dataclass(frozen=True, slots=True)
class PrincipalPattern:
    kind: PrincipalKind
    value: str  # exact; a trailing "*" makes it a prefix
    prefix: bool = False
    # `sub@corp:alice`: the token must come from the issuer named `corp` (token kinds only).
    # Without it a `sub`/`group` pattern matches a token of any configured issuer.
    issuer: str | None = None

    def __str__(self) -> str:
        scope = f"@{self.issuer}" if self.issuer is not None else ""
        return f"{self.kind.value}{scope}:{self.value}{'*' if self.prefix else ''}"


@dataclass(frozen=True, slots=True)
class RouteAuth:
    """Who may use a route. Empty permissions and principals: any authenticated caller."""

    anonymous: bool = False  # no credential needed (the edge's own is still stripped)
    permissions: tuple[str, ...] = ()  # from the issuer's permissions claim
    permission_mode: PermissionMode = PermissionMode.ANY_OF
    principals: tuple[PrincipalPattern, ...] = ()  # any one must match


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str  # defaults to "routes[<index>]"
    backend: str
    match: RouteMatch = field(default_factory=RouteMatch)
    max_request_body_bytes: int | None = None  # None = limits.max_request_body_bytes; 0 = none
    auth: RouteAuth | None = None  # None: `auth.default_route` (when `auth:` is configured)


@dataclass(frozen=True, slots=True)
class StaticEndpoint:
    address: Address
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value)
    weight: int = 1


@dataclass(frozen=True, slots=True)
class StaticResolverConfig:
    endpoints: tuple[StaticEndpoint, ...]


@dataclass(frozen=True, slots=True)
class DnsResolverConfig:
    """A/AAAA lookups of `name`, every endpoint on `port`; re-resolved when the TTL ends."""

    name: str
    port: int
    min_ttl: float = 5.0  # floor: never re-resolve more often than this
    max_ttl: float = 300.0  # ceiling: re-resolve at least this often
    nameservers: tuple[Address, ...] = ()  # empty = the system resolver's (/etc/resolv.conf)
    families: tuple[Literal["A", "AAAA"], ...] = ("A", "AAAA")


@dataclass(frozen=True, slots=True)
class SrvResolverConfig:
    """SRV lookup of `name`; each target's A/AAAA records with the SRV port (or port_override)."""

    name: str
    port_override: int | None = None
    min_ttl: float = 5.0
    max_ttl: float = 300.0
    nameservers: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class K8sResolverConfig:
    """A Service's EndpointSlices (kEdge's `k8s` resolver): `<service>.<namespace>:<port>`,
    the port a number (the endpoints' port) or a Service port name."""

    namespace: str
    service: str
    port: int | str


ResolverConfig = StaticResolverConfig | DnsResolverConfig | SrvResolverConfig | K8sResolverConfig


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """Routes generated from Services labelled `<label_prefix>kedge-exposed`."""

    domain_suffix: str  # generated hosts: <service>.<namespace>.<domain_suffix>
    label_prefix: str = "kedge.io/"  # also the prefix of the annotations read
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    settle: float = 0.2  # wait this long after a change for more before rebuilding


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    """How the edge reaches the Kubernetes API (for `k8s` resolvers and route discovery)."""

    kubeconfig: str | None = None  # None: the in-cluster service account
    context: str | None = None  # kubeconfig context; None: its current-context
    api_url: str | None = None  # in cluster; None: from KUBERNETES_SERVICE_HOST/_PORT
    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    watch_timeout: float = 300.0  # timeoutSeconds of each watch request (jittered down)
    backoff_initial: float = 0.5  # after a failed list or watch; doubles, with full jitter
    backoff_max: float = 30.0
    serve_terminating: bool = False  # no ready endpoint: use serving-but-terminating ones
    discovery: DiscoveryConfig | None = None  # None: no route discovery


@dataclass(frozen=True, slots=True)
class BackendTlsConfig:
    ca_file: str | None = None  # None = the system trust store
    server_name: str | None = None  # SNI and the name verified; None = endpoint host
    insecure_skip_verify: bool = False
    cert_file: str | None = None  # client certificate for mTLS to the endpoints
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class BackendTimeouts:
    connect: float = 2.0  # TCP (+TLS) connect, then the next endpoint is tried
    response_header: float = 60.0  # request sent -> response head received; 0 = none
    idle: float = 0.0  # no byte either way on an active exchange; 0 = none (streams live on)
    # A gRPC call's `grpc-timeout` is honoured up to this; 0 = no cap. Calls without one
    # get no whole-call deadline (response_header and idle still apply).
    max_grpc_timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryConfig:
    attempts: int = 2  # total tries, each on a different endpoint; 1 = no retry
    # Retries allowed: this share of the backend's requests over 10 s, and at least
    # min_per_second of them (Finagle's retry budget); beyond, the first error stands.
    budget_percent: float = 20.0
    budget_min_per_second: float = 3.0
    per_try_timeout: float = 0.0  # response head per try; 0 = timeouts.response_header
    backoff_base: float = 0.025  # before retry n: uniform(0, min(max, base * 2^(n-1)))
    backoff_max: float = 0.25


@dataclass(frozen=True, slots=True)
class HttpHealthCheck:
    """GET `path` over the backend's protocol; healthy when the status is expected."""

    path: str = "/healthz"
    expected_statuses: tuple[int, ...] = (200,)  # sorted; "2xx" in YAML expands to 200-299
    host: str | None = None  # Host (:authority on HTTP/2); None: the endpoint's address


@dataclass(frozen=True, slots=True)
class GrpcHealthCheck:
    """grpc.health.v1.Health/Check (protocol h2 or h2c); only SERVING is healthy."""

    service: str = ""  # "" asks about the server as a whole
    host: str | None = None  # :authority; None: the endpoint's address


@dataclass(frozen=True, slots=True)
class TcpHealthCheck:
    """A TCP connect that succeeds is healthy (no TLS handshake, no byte sent)."""


HealthProbe = HttpHealthCheck | GrpcHealthCheck | TcpHealthCheck


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Active checks of every ready endpoint (Envoy's health_checks, one probe kind)."""

    probe: HealthProbe  # YAML: exactly one of `http`, `grpc`, `tcp`
    interval: float = 10.0  # between checks of one endpoint, plus up to 10% jitter
    timeout: float = 1.0  # one check, connect included; longer is a failure
    healthy_threshold: int = 2  # consecutive passes: unhealthy -> healthy
    unhealthy_threshold: int = 3  # consecutive failures: healthy -> unhealthy


@dataclass(frozen=True, slots=True)
class OutlierDetectionConfig:
    """Passive ejection of endpoints that fail requests (Envoy's consecutive_5xx)."""

    enabled: bool = True
    consecutive_failures: int = 5  # 5xx answers or connect failures/resets/timeouts in a row
    base_ejection: float = 30.0  # the first ejection; doubles with each further one
    max_ejection: float = 300.0  # cap on one ejection
    max_ejected_percent: int = 50  # of the backend's ready endpoints, rounded down


@dataclass(frozen=True, slots=True)
class RemoteClusterConfig:
    """Another cluster's edge that can serve this backend too (cross-cluster failover).

    Its endpoints are that edge's addresses; a request sent there keeps its Host (or
    :authority), so the remote edge routes it with its own table, and carries `token_file`'s
    token as `Proxy-Authorization` (the remote edge's auth layer reads it)."""

    name: str  # the remote cluster's name: its endpoints get the label cluster=<name>
    endpoints: tuple[Address, ...]
    priority: int = 0  # among other clusters, lower goes first
    weight: int = 1  # within one priority, the share of traffic
    tls: BackendTlsConfig | None = None  # TLS to the remote edge; None: plaintext
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    token_file: str | None = None  # bearer token for the remote edge, re-read when it changes


@dataclass(frozen=True, slots=True)
class BackendConfig:
    name: str
    resolver: ResolverConfig
    balancer: Balancer = Balancer.ROUND_ROBIN
    tls: BackendTlsConfig | None = None  # None: plaintext to the endpoints
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    pool: PoolConfig = field(default_factory=PoolConfig)
    timeouts: BackendTimeouts = field(default_factory=BackendTimeouts)
    retries: RetryConfig = field(default_factory=RetryConfig)
    # Endpoints labelled with another `cluster` than the edge's own may serve; False drops
    # them (a backend that must stay in its cluster whatever its resolver returns).
    allow_cross_cluster: bool = True
    remote_clusters: tuple[RemoteClusterConfig, ...] = ()
    health_check: HealthCheckConfig | None = None  # None: no active checks
    outlier_detection: OutlierDetectionConfig = field(default_factory=OutlierDetectionConfig)
    # Below this percentage of ready endpoints available (not ejected, not failing active
    # checks), traffic goes to all ready endpoints (Envoy's panic mode); 0 = never.
    panic_threshold: int = 50


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int
    high: int  # inclusive


@dataclass(frozen=True, slots=True)
class AdhocRule:
    """kEdge adhoc semantics: forward to a DNS name matched by pattern, on allowed ports.

    The first rule whose `dns_name` matches decides; a port it does not allow is refused
    (403), it does not fall through to later rules (as in kEdge).
    """

    dns_name: str  # exact name or "*.suffix" (lower-case)
    default_port: int = 80  # used when the request names no port
    allowed_ports: tuple[int, ...] = ()
    allowed_port_ranges: tuple[PortRange, ...] = ()
    replace_pattern: str | None = None  # substring of the name to replace before lookup
    replace_substitution: str = ""
    allow_loopback: bool = False  # 127.0.0.0/8, ::1
    allow_link_local: bool = False  # 169.254.0.0/16 (cloud metadata), fe80::/10
    allow_private: bool = True  # RFC 1918, fc00::/7: pods and services live there
    connect_timeout: float = 2.0
    allow_connect: bool = False  # CONNECT tunnels to the names this rule matches


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """An OpenID provider whose JWTs the edge accepts (RFC 7519, RFC 8725)."""

    name: str
    issuer: str  # the exact `iss` value
    audiences: tuple[str, ...]  # the token's `aud` must contain one of these
    jwks_url: str | None = None  # pinned key set; None: from discovery
    discovery_url: str | None = None  # None: <issuer>/.well-known/openid-configuration
    algorithms: tuple[str, ...] = ("RS256",)  # asymmetric only: never `none`, never HS*
    permissions_claim: str = "permissions"  # dotted path; a string or a list of strings
    groups_claim: str = "groups"  # dotted path; a string or a list of strings
    leeway: float = 60.0  # clock skew allowed on exp, nbf and iat
    max_lifetime: float = 86400.0  # exp - iat at most this; 0 = no cap
    jwks_ttl: float = 300.0  # a fetched key set is refreshed after this
    jwks_max_stale: float = 86400.0  # while the JWKS endpoint fails, old keys serve this long
    unknown_kid_cooldown: float = 30.0  # at most one refresh per this for unknown `kid`s
    fetch_timeout: float = 5.0
    ca_file: str | None = None  # TLS trust for the provider; None = the system store


@dataclass(frozen=True, slots=True)
class AuthConfig:
    issuers: tuple[IssuerConfig, ...] = ()
    max_token_bytes: int = 8192  # larger bearer tokens get 431 before any parsing
    token_cache_size: int = 10000  # verified tokens remembered until they expire
    identity_header: str | None = None  # the edge's trusted identity header for backends
    strip_headers: tuple[str, ...] = ()  # more client headers never trusted (lower-case)
    default_route: RouteAuth = field(default_factory=RouteAuth)  # routes without `auth:`
    adhoc: RouteAuth = field(default_factory=RouteAuth)  # requests sent by adhoc rules


@dataclass(frozen=True, slots=True)
class LocalityConfig:
    """Where this edge runs, for locality-aware balancing (tiers: zone, region, cluster,
    other clusters). Unset fields never make an endpoint farther."""

    cluster: str | None = None
    region: str | None = None
    zone: str | None = None
    # A tier keeps all its traffic while this share of its endpoints is available; below,
    # it spills to the next tier in proportion (Envoy's over-provisioning factor 1/0.7).
    healthy_capacity: float = 0.7


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    source: str  # file name the config came from, or "<embedded demo>"
    listeners: tuple[ListenerConfig, ...]
    backends: tuple[BackendConfig, ...]
    routes: tuple[RouteConfig, ...]
    adhoc: tuple[AdhocRule, ...] = ()
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    http2: Http2Config = field(default_factory=Http2Config)
    demo_backend: Address | None = None  # serve the built-in demo backend here
    access_log: bool = True
    auth: AuthConfig | None = None  # None: no auth layer, every route is anonymous
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    locality: LocalityConfig = field(default_factory=LocalityConfig)

    def backend(self, name: str) -> BackendConfig:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

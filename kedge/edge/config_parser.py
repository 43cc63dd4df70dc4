"""EdgeConfig from YAML: the edge's schema, checked key by key (documented in configs/README.md).

Defaults live only in the dataclasses of `kedge.edge.config`: the parser builds a base
instance and reads its fields whenever a key is absent. Relative file paths (TLS
certificates and keys) are resolved against the directory of the config file, so a
config works from any working directory.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from functools import partial
from importlib import resources

from kedge.core.config_loading import (
    Fields,
    Node,
    claim_name,
    dataclass_keys,
    existing_file,
    load_yaml,
    node_list,
    parse_yaml_text,
)
from kedge.core.net.tls import client_context
from kedge.edge.config import (
    Address,
    AdminConfig,
    BackendConfig,
    BackendTimeouts,
    BackendTlsConfig,
    Balancer,
    ClientCertConfig,
    EdgeConfig,
    LimitsConfig,
    ListenerConfig,
    ListenerTls,
    LocalityConfig,
    PoolConfig,
    RemoteClusterConfig,
    ResolverConfig,
    RetryConfig,
    StaticResolverConfig,
    TimeoutsConfig,
    UpstreamProtocol,
)
from kedge.edge.config_auth import (
    check_auth_consistency,
    parse_auth,
    parse_client_certs,
    parse_credentials,
)
from kedge.edge.config_health import parse_backend_health
from kedge.edge.config_http2 import parse_http2
from kedge.edge.config_kubernetes import parse_kubernetes
from kedge.edge.config_resolvers import address_of, dns_name, parse_resolver
from kedge.edge.config_routes import parse_adhoc_rule, parse_routes
from kedge.edge.tls_contexts import listener_context

__all__ = ["DEMO_SOURCE", "embedded_demo_config", "load_edge_config", "parse_edge_config"]

DEMO_SOURCE = "<embedded demo>"

_TOP_KEYS = (
    "listeners",
    "admin",
    "demo_backend",
    "access_log",
    "limits",
    "timeouts",
    "http2",
    "backends",
    "routes",
    "adhoc",
    "auth",
    "kubernetes",
    "locality",
)
_DEFAULT_CREDENTIALS = ListenerConfig("", Address("", 0)).credentials
_BACKEND_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def load_edge_config(path: str) -> EdgeConfig:
    """Read, parse and validate an edge config file; any problem is a ConfigError."""
    root = load_yaml(path)
    return parse_edge_config(root.value, path, base_dir=os.path.dirname(os.path.abspath(path)))


def embedded_demo_config() -> EdgeConfig:
    """The built-in demo (kedge/edge/demo_config.yaml), for `kedge` run without a config."""
    text = resources.files("kedge.edge").joinpath("demo_config.yaml").read_text("utf-8")
    return parse_edge_config(parse_yaml_text(text, DEMO_SOURCE).value, DEMO_SOURCE)


def parse_edge_config(data: object, source: str, *, base_dir: str | None = None) -> EdgeConfig:
    """Validate already-loaded YAML data. `base_dir` anchors relative file paths (default: cwd)."""
    root = Node(data, source)
    if data is None:
        raise root.error("the config is empty", "start from configs/edge-minimal.yaml")
    f = root.as_mapping(_TOP_KEYS)
    listeners = _listeners(
        f.require("listeners", "add `listeners: [{name: http, address: 127.0.0.1:8080}]`"),
        base_dir,
    )
    backends = _backends(f.get("backends"), base_dir)
    routes = parse_routes(f.get("routes"), backends)
    adhoc = tuple(parse_adhoc_rule(n) for n in node_list(f.get("adhoc")))
    base = EdgeConfig(source, listeners, backends, routes)
    config = EdgeConfig(
        source=source,
        listeners=listeners,
        backends=backends,
        routes=routes,
        adhoc=adhoc,
        admin=_admin(f.get("admin"), base.admin),
        limits=_limits(f.get("limits"), base.limits),
        timeouts=_timeouts(f.get("timeouts"), base.timeouts),
        http2=parse_http2(f.get("http2"), base.http2),
        demo_backend=address_of(n) if (n := f.get("demo_backend")) else base.demo_backend,
        access_log=f.get_bool("access_log", base.access_log),
        auth=parse_auth(f.get("auth"), base_dir),
        kubernetes=parse_kubernetes(f.get("kubernetes"), base.kubernetes, base_dir),
        locality=_locality(n) if (n := f.get("locality")) else base.locality,
    )
    _check_address_clashes(f, config)
    check_auth_consistency(config, root)
    return config


# --- small shared pieces --------------------------------------------------------------


def _optional_tls(f: Fields, keys: tuple[str, ...]) -> Fields | None:
    """The `tls` block, or None; a bare `tls:` is refused because plaintext must be explicit."""
    if f.is_null("tls"):
        raise f.node.child("tls").error(
            "`tls` has no value", "fill in the tls keys, or remove `tls` for plaintext"
        )
    n = f.get("tls")
    return None if n is None else n.as_mapping(keys)


# --- listeners, admin, limits, timeouts -----------------------------------------------


def _listeners(node: Node, base_dir: str | None) -> tuple[ListenerConfig, ...]:
    seen: dict[str, str] = {}
    out: list[ListenerConfig] = []
    for i, item in enumerate(node.as_list(allow_empty=False)):
        f = item.as_mapping(("name", "address", "tls", "credentials"))
        name = f.get_str("name", f"listeners[{i}]")
        claim_name(seen, name, f.get("name") or item, "listener")
        # Port 0 lets tests bind a free port; the app reports the one it got.
        address = address_of(
            f.require("address", "e.g. `address: 127.0.0.1:8080`"), allow_port_zero=True
        )
        tls = _optional_tls(f, dataclass_keys(ListenerTls))
        listener_tls = None
        if tls is not None:
            fix = "give the PEM file of the listener's certificate chain and its key"
            cert, key = tls.require("cert_file", fix), tls.require("key_file", fix)
            certs = tls.get("client_certs")
            listener_tls = ListenerTls(
                existing_file(cert, base_dir),
                existing_file(key, base_dir),
                parse_client_certs(certs, base_dir) if certs else ClientCertConfig(),
                tls.get_bool("require_sni_match", False),
            )
            _check_loads(
                tls.node,
                partial(listener_context, listener_tls),
                "cert_file must hold a PEM certificate chain and key_file its private key; "
                "client_certs.ca_files must hold PEM CA certificates and crl_files PEM CRLs",
            )
        credentials = f.get("credentials")
        out.append(
            ListenerConfig(
                name,
                address,
                listener_tls,
                parse_credentials(credentials) if credentials else _DEFAULT_CREDENTIALS,
            )
        )
    return tuple(out)


def _locality(node: Node) -> LocalityConfig:
    f = node.as_mapping(dataclass_keys(LocalityConfig))
    d = LocalityConfig()
    capacity = f.get("healthy_capacity")
    value = d.healthy_capacity
    if capacity is not None:
        value = capacity.as_float(minimum=0.01)
        if value > 1.0:
            raise capacity.error(
                f"healthy_capacity {value:g} is above 1", "a share of endpoints, e.g. 0.7"
            )
    names = {k: f.get_str(k, "") or None for k in ("cluster", "region", "zone")}
    return LocalityConfig(healthy_capacity=value, **names)


def _admin(node: Node | None, default: AdminConfig) -> AdminConfig:
    if node is None:
        return default
    f = node.as_mapping(dataclass_keys(AdminConfig))
    n = f.get("address")
    return default if n is None else AdminConfig(address_of(n, allow_port_zero=True))


def _limits(node: Node | None, d: LimitsConfig) -> LimitsConfig:
    if node is None:
        return d
    f = node.as_mapping(dataclass_keys(LimitsConfig))
    return LimitsConfig(
        max_uri_bytes=f.get_size("max_uri_bytes", d.max_uri_bytes, allow_zero=False),
        max_header_bytes=f.get_size("max_header_bytes", d.max_header_bytes, allow_zero=False),
        max_header_count=f.get_int("max_header_count", d.max_header_count, minimum=1),
        max_request_body_bytes=f.get_size("max_request_body_bytes", d.max_request_body_bytes),
        max_pipelined_requests=f.get_int(
            "max_pipelined_requests", d.max_pipelined_requests, minimum=0
        ),
        max_keepalive_requests=f.get_int(
            "max_keepalive_requests", d.max_keepalive_requests, minimum=1
        ),
        max_response_header_bytes=f.get_size(
            "max_response_header_bytes", d.max_response_header_bytes, allow_zero=False
        ),
        max_connections=f.get_int("max_connections", d.max_connections, minimum=0),
        tunnel_idle_timeout=f.get_duration(
            "tunnel_idle_timeout", d.tunnel_idle_timeout, allow_zero=False
        ),
    )


def _timeouts(node: Node | None, d: TimeoutsConfig) -> TimeoutsConfig:
    if node is None:
        return d
    f = node.as_mapping(dataclass_keys(TimeoutsConfig))
    return TimeoutsConfig(
        request_header=f.get_duration("request_header", d.request_header, allow_zero=False),
        request_body_idle=f.get_duration(
            "request_body_idle", d.request_body_idle, allow_zero=False
        ),
        keepalive_idle=f.get_duration("keepalive_idle", d.keepalive_idle, allow_zero=False),
        drain=f.get_duration("drain", d.drain),
    )


def _check_address_clashes(f: Fields, config: EdgeConfig) -> None:
    """Two sockets on one address cannot both bind; say so now rather than at startup."""
    claims: list[tuple[Address, Node]] = [
        (listener.address, f.node.child("listeners").item(i).child("address"))
        for i, listener in enumerate(config.listeners)
    ]
    claims.append((config.admin.address, f.node.child("admin").child("address")))
    if config.demo_backend is not None:
        claims.append((config.demo_backend, f.node.child("demo_backend")))
    seen: dict[Address, str] = {}
    for address, node in claims:
        if address.port == 0:
            continue
        if address in seen:
            implicit = " (the default)" if node.path == "admin.address" and "admin" not in f else ""
            raise node.error(
                f"address {address}{implicit} is already used by {seen[address]}",
                "give each listener, the admin server and demo_backend its own port",
            )
        seen[address] = node.path


# --- backends ---------------------------------------------------------------------------


def _backends(node: Node | None, base_dir: str | None) -> tuple[BackendConfig, ...]:
    seen: dict[str, str] = {}
    out: list[BackendConfig] = []
    for item in node_list(node):
        backend = _backend(item, base_dir)
        claim_name(seen, backend.name, item.child("name"), "backend")
        out.append(backend)
    return tuple(out)


def _backend(item: Node, base_dir: str | None) -> BackendConfig:
    f = item.as_mapping(dataclass_keys(BackendConfig))
    name_node = f.require("name", "e.g. `name: api`")
    name = name_node.as_str()
    if not _BACKEND_NAME.fullmatch(name):
        suggestion = re.sub(r"[^a-z0-9_.-]", "-", name.lower()).lstrip("_.-")[:63] or "api"
        raise name_node.error(
            f"invalid backend name {name!r}",
            f"use lower-case letters, digits, '_', '.', '-' (start with a letter or digit, "
            f"at most 63 characters), e.g. {suggestion!r}",
        )
    if "resolver" not in f and "remote_clusters" in f:
        # Served by other clusters' edges only (a global edge in front of cluster edges).
        resolver: ResolverConfig = StaticResolverConfig(endpoints=())
    else:
        resolver = parse_resolver(
            f.require(
                "resolver",
                "e.g. `resolver: {static: {endpoints: [127.0.0.1:9000]}}` "
                "(or `remote_clusters:` for a backend served by other clusters' edges only)",
            )
        )
    base = BackendConfig(name, resolver)
    tls = _optional_tls(f, dataclass_keys(BackendTlsConfig))
    protocol = _protocol(f, base.protocol, tls is not None)
    health_check, outlier_detection, panic_threshold = parse_backend_health(f, base, protocol)
    return BackendConfig(
        name=name,
        resolver=resolver,
        balancer=f.get_enum("balancer", Balancer, base.balancer),
        tls=None if tls is None else _backend_tls(tls, base_dir),
        protocol=protocol,
        pool=_pool(n, base.pool) if (n := f.get("pool")) else base.pool,
        timeouts=_backend_timeouts(n, base.timeouts) if (n := f.get("timeouts")) else base.timeouts,
        retries=_retries(n, base.retries) if (n := f.get("retries")) else base.retries,
        allow_cross_cluster=f.get_bool("allow_cross_cluster", base.allow_cross_cluster),
        remote_clusters=_remote_clusters(f.get("remote_clusters"), base_dir),
        health_check=health_check,
        outlier_detection=outlier_detection,
        panic_threshold=panic_threshold,
    )


def _protocol(f: Fields, default: UpstreamProtocol, has_tls: bool) -> UpstreamProtocol:
    protocol = f.get_enum("protocol", UpstreamProtocol, default)
    if protocol is UpstreamProtocol.H2 and not has_tls:
        raise f.node.child("protocol").error(
            "protocol h2 needs TLS to the endpoints (HTTP/2 is negotiated by ALPN)",
            "add a `tls:` block, or use `protocol: h2c` for cleartext HTTP/2",
        )
    if protocol is UpstreamProtocol.H2C and has_tls:
        raise f.node.child("protocol").error(
            "protocol h2c is cleartext HTTP/2, but `tls` is set",
            "use `protocol: h2` for HTTP/2 over TLS, or remove `tls`",
        )
    return protocol


def _remote_clusters(node: Node | None, base_dir: str | None) -> tuple[RemoteClusterConfig, ...]:
    seen: dict[str, str] = {}
    out: list[RemoteClusterConfig] = []
    for item in node_list(node):
        f = item.as_mapping(dataclass_keys(RemoteClusterConfig))
        name = f.require("name", "name the remote cluster, e.g. `name: cluster-b`").as_str()
        claim_name(seen, name, item.child("name"), "remote cluster")
        endpoints = tuple(
            address_of(n)
            for n in f.require(
                "endpoints", "list the remote edge's addresses, e.g. [edge.cluster-b.test:443]"
            ).as_list(allow_empty=False)
        )
        d = RemoteClusterConfig(name, endpoints)
        tls = _optional_tls(f, dataclass_keys(BackendTlsConfig))
        token = f.get("token_file")
        out.append(
            RemoteClusterConfig(
                name=name,
                endpoints=endpoints,
                priority=f.get_int("priority", d.priority, minimum=0, maximum=1000),
                weight=f.get_int("weight", d.weight, minimum=1, maximum=1000),
                tls=None if tls is None else _backend_tls(tls, base_dir),
                protocol=_protocol(f, d.protocol, tls is not None),
                token_file=existing_file(token, base_dir) if token is not None else None,
            )
        )
    return tuple(out)


def _backend_tls(f: Fields, base_dir: str | None) -> BackendTlsConfig:
    d = BackendTlsConfig()
    if ("cert_file" in f) != ("key_file" in f):
        given, missing = (
            ("cert_file", "key_file") if "cert_file" in f else ("key_file", "cert_file")
        )
        raise f.node.child(missing).error(
            f"{given} is set but {missing} is not",
            "give both cert_file and key_file for a client certificate, or neither",
        )
    server_name = f.get("server_name")
    tls = BackendTlsConfig(
        ca_file=existing_file(n, base_dir) if (n := f.get("ca_file")) else d.ca_file,
        server_name=dns_name(server_name) if server_name else d.server_name,
        insecure_skip_verify=f.get_bool("insecure_skip_verify", d.insecure_skip_verify),
        cert_file=existing_file(n, base_dir) if (n := f.get("cert_file")) else d.cert_file,
        key_file=existing_file(n, base_dir) if (n := f.get("key_file")) else d.key_file,
    )
    _check_loads(
        f.node,
        lambda: client_context(
            ca_file=tls.ca_file,
            insecure_skip_verify=tls.insecure_skip_verify,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
        ),
        "ca_file must hold PEM CA certificates; cert_file/key_file a PEM certificate and key",
    )
    return tls


def _check_loads(node: Node, load: Callable[[], object], fix: str) -> None:
    """Load TLS files as the server will, so `kedge check` fails where `serve` would."""
    try:
        load()
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise node.error(f"TLS files do not load: {reason}", fix) from None


def _pool(node: Node, d: PoolConfig) -> PoolConfig:
    f = node.as_mapping(dataclass_keys(PoolConfig))
    return PoolConfig(
        max_idle_per_endpoint=f.get_int(
            "max_idle_per_endpoint", d.max_idle_per_endpoint, minimum=0
        ),
        idle_timeout=f.get_duration("idle_timeout", d.idle_timeout, allow_zero=False),
        max_connections_per_endpoint=f.get_int(
            "max_connections_per_endpoint", d.max_connections_per_endpoint, minimum=0
        ),
    )


def _backend_timeouts(node: Node, d: BackendTimeouts) -> BackendTimeouts:
    f = node.as_mapping(dataclass_keys(BackendTimeouts))
    return BackendTimeouts(
        connect=f.get_duration("connect", d.connect, allow_zero=False),
        response_header=f.get_duration("response_header", d.response_header),
        idle=f.get_duration("idle", d.idle),
        max_grpc_timeout=f.get_duration("max_grpc_timeout", d.max_grpc_timeout),
    )


def _retries(node: Node, d: RetryConfig) -> RetryConfig:
    f = node.as_mapping(dataclass_keys(RetryConfig))
    percent = f.get("budget_percent")
    return RetryConfig(
        attempts=f.get_int("attempts", d.attempts, minimum=1),
        budget_percent=percent.as_float(minimum=0) if percent else d.budget_percent,
        budget_min_per_second=(
            n.as_float(minimum=0)
            if (n := f.get("budget_min_per_second"))
            else d.budget_min_per_second
        ),
        per_try_timeout=f.get_duration("per_try_timeout", d.per_try_timeout),
        backoff_base=f.get_duration("backoff_base", d.backoff_base),
        backoff_max=f.get_duration("backoff_max", d.backoff_max),
    )


# --- routes -----------------------------------------------------------------------------

"""Tests for kedge.edge.config_parser: YAML -> EdgeConfig, and errors that name key and fix."""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from kedge.core.errors import ConfigError
from kedge.edge.config import (
    Address,
    AdhocRule,
    AdminConfig,
    AuthConfig,
    BackendConfig,
    BackendTimeouts,
    BackendTlsConfig,
    Balancer,
    ClientCertConfig,
    ClientCertMode,
    CredentialSource,
    DiscoveryConfig,
    DnsResolverConfig,
    EdgeConfig,
    GrpcHealthCheck,
    HeaderMatch,
    HealthCheckConfig,
    HttpHealthCheck,
    IssuerConfig,
    K8sResolverConfig,
    KubernetesConfig,
    LimitsConfig,
    ListenerConfig,
    ListenerTls,
    LocalityConfig,
    NoEkuPolicy,
    OutlierDetectionConfig,
    PoolConfig,
    PortRange,
    PrincipalKind,
    PrincipalPattern,
    ProxyMode,
    RemoteClusterConfig,
    RetryConfig,
    RouteAuth,
    RouteConfig,
    RouteMatch,
    SrvResolverConfig,
    StaticEndpoint,
    StaticResolverConfig,
    TimeoutsConfig,
    UpstreamProtocol,
)
from kedge.edge.config_parser import (
    DEMO_SOURCE,
    embedded_demo_config,
    load_edge_config,
    parse_edge_config,
)
from tests.support.ops_tls import empty_crl

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Files the example configs name, relative to their directory.
EXAMPLE_CERT_FILES = (
    "edge.pem",
    "edge-key.pem",
    "backend-ca.pem",
    "client.pem",
    "client-key.pem",
    "crl.pem",
    "kubeconfig.yaml",
)

BASE: dict[str, Any] = {
    "listeners": [{"name": "http", "address": "127.0.0.1:8080"}],
    "backends": [{"name": "demo", "resolver": {"static": {"endpoints": ["127.0.0.1:9000"]}}}],
    "routes": [{"name": "demo", "backend": "demo", "match": {"host": "demo.test"}}],
}
DEMO_BACKEND = BackendConfig(
    "demo", StaticResolverConfig((StaticEndpoint(Address("127.0.0.1", 9000)),))
)
LISTENERS = (ListenerConfig("http", Address("127.0.0.1", 8080)),)


def _with(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(overrides)
    return data


def _route(**keys: Any) -> dict[str, Any]:
    """BASE with one route, `backend: demo` plus `keys`."""
    return _with(routes=[{"backend": "demo", **keys}])


def _backend(**keys: Any) -> dict[str, Any]:
    """BASE with one backend named demo, made of `keys`."""
    return _with(backends=[{"name": "demo", **keys}])


def _parse(data: object, base_dir: Path | None = None) -> EdgeConfig:
    return parse_edge_config(
        data, "edge.yaml", base_dir=None if base_dir is None else str(base_dir)
    )


# --- good configs -----------------------------------------------------------------------


def test_base_config_takes_every_default_from_the_dataclasses() -> None:
    assert _parse(BASE) == EdgeConfig(
        source="edge.yaml",
        listeners=LISTENERS,
        backends=(DEMO_BACKEND,),
        routes=(RouteConfig("demo", "demo", RouteMatch(host="demo.test")),),
    )


GOOD: list[tuple[str, dict[str, Any], Any, Any]] = [
    (
        "top-level scalars",
        _with(demo_backend="127.0.0.1:9902", access_log=False, admin={"address": "[::1]:9999"}),
        lambda c: (c.demo_backend, c.access_log, c.admin),
        (Address("127.0.0.1", 9902), False, AdminConfig(Address("::1", 9999))),
    ),
    (
        "limits with sizes and a partial override",
        _with(
            limits={
                "max_header_bytes": "32KiB",
                "max_request_body_bytes": 0,
                "max_uri_bytes": "4KB",
            }
        ),
        lambda c: c.limits,
        LimitsConfig(max_uri_bytes=4000, max_header_bytes=32 * 1024, max_request_body_bytes=0),
    ),
    (
        "timeouts with durations",
        _with(timeouts={"request_header": "250ms", "drain": 0, "keepalive_idle": "1h30m"}),
        lambda c: c.timeouts,
        TimeoutsConfig(request_header=0.25, keepalive_idle=5400.0, drain=0.0),
    ),
    (
        "listener with port 0 and default name",
        _with(listeners=[{"address": "127.0.0.1:0"}]),
        lambda c: c.listeners,
        (ListenerConfig("listeners[0]", Address("127.0.0.1", 0)),),
    ),
    (
        "static endpoints in both forms, labels sorted",
        _backend(
            balancer="p2c",
            resolver={
                "static": {
                    "endpoints": [
                        "127.0.0.1:9000",
                        {
                            "address": "127.0.0.1:9001",
                            "labels": {"zone": "a", "cluster": "c"},
                            "weight": 3,
                        },
                    ]
                }
            },
            pool={
                "max_idle_per_endpoint": 0,
                "idle_timeout": "5s",
                "max_connections_per_endpoint": 10,
            },
            timeouts={"connect": "500ms", "response_header": 0, "idle": "30s"},
            retries={"attempts": 1},
        ),
        lambda c: c.backends[0],
        BackendConfig(
            name="demo",
            balancer=Balancer.P2C,
            resolver=StaticResolverConfig(
                (
                    StaticEndpoint(Address("127.0.0.1", 9000)),
                    StaticEndpoint(
                        Address("127.0.0.1", 9001), (("cluster", "c"), ("zone", "a")), 3
                    ),
                )
            ),
            pool=PoolConfig(
                max_idle_per_endpoint=0, idle_timeout=5.0, max_connections_per_endpoint=10
            ),
            timeouts=BackendTimeouts(connect=0.5, response_header=0.0, idle=30.0),
            retries=RetryConfig(attempts=1),
        ),
    ),
    (
        "dns resolver",
        _backend(
            resolver={
                "dns": {
                    "name": "Svc.Example.Test",
                    "port": 80,
                    "min_ttl": "1s",
                    "nameservers": ["127.0.0.1:5353"],
                    "families": ["aaaa"],
                }
            }
        ),
        lambda c: c.backends[0].resolver,
        DnsResolverConfig(
            "svc.example.test",
            80,
            min_ttl=1.0,
            nameservers=(Address("127.0.0.1", 5353),),
            families=("AAAA",),
        ),
    ),
    (
        "srv resolver",
        _backend(
            resolver={
                "srv": {
                    "name": "_http._tcp.svc.example.test",
                    "port_override": 8080,
                    "max_ttl": "1m",
                }
            }
        ),
        lambda c: c.backends[0].resolver,
        SrvResolverConfig("_http._tcp.svc.example.test", port_override=8080, max_ttl=60.0),
    ),
    (
        "backend tls with defaults",
        _backend(resolver=BASE["backends"][0]["resolver"], tls={}),
        lambda c: c.backends[0].tls,
        BackendTlsConfig(),
    ),
    (
        "backend tls without verification",
        _backend(
            resolver=BASE["backends"][0]["resolver"],
            tls={"server_name": "API.internal", "insecure_skip_verify": True},
        ),
        lambda c: c.backends[0].tls,
        BackendTlsConfig(server_name="api.internal", insecure_skip_verify=True),
    ),
    (
        "route defaults: name from index, match any",
        _route(),
        lambda c: c.routes,
        (RouteConfig("routes[0]", "demo"),),
    ),
    (
        "route match, header mapping form",
        _route(
            name="api",
            match={
                "host": "API.Example.Test.",
                "port": 8443,
                "paths": ["/v1/*", "/healthz", "/*"],
                "headers": {"X-Env": "prod", "x-empty": ""},
                "proxy_mode": "forward",
            },
            max_request_body_bytes="1GiB",
        ),
        lambda c: c.routes[0],
        RouteConfig(
            "api",
            "demo",
            RouteMatch(
                host="api.example.test",
                port=8443,
                paths=("/v1/*", "/healthz", "/*"),
                headers=(HeaderMatch("x-env", exact="prod"), HeaderMatch("x-empty", exact="")),
                proxy_mode=ProxyMode.FORWARD,
            ),
            max_request_body_bytes=1024**3,
        ),
    ),
    (
        "route match, header list form and wildcard host",
        _route(
            match={
                "host": "*.Example.Test",
                "headers": [
                    {"name": "X-Canary", "exact": "1"},
                    {"name": "user-agent", "regex": "curl/.*"},
                ],
            },
            max_request_body_bytes=0,
        ),
        lambda c: (c.routes[0].match, c.routes[0].max_request_body_bytes),
        (
            RouteMatch(
                host="*.example.test",
                headers=(
                    HeaderMatch("x-canary", exact="1"),
                    HeaderMatch("user-agent", regex="curl/.*"),
                ),
            ),
            0,
        ),
    ),
    (
        "ipv6 literal host, canonical paths",
        _route(match={"host": "[0:0::1]", "paths": ["/a;b/*", "/~user", "/%C3%A9"]}),
        lambda c: (c.routes[0].match.host, c.routes[0].match.paths),
        ("::1", ("/a;b/*", "/~user", "/%C3%A9")),
    ),
    (
        "empty paths list means any path",
        _route(match={"paths": []}),
        lambda c: c.routes[0].match.paths,
        (),
    ),
    (
        "adhoc with defaults",
        _with(adhoc=[{"dns_name": "*.pods.internal"}]),
        lambda c: c.adhoc,
        (AdhocRule("*.pods.internal"),),
    ),
    (
        "adhoc with every key",
        _with(
            adhoc=[
                {
                    "dns_name": "*.pods.internal",
                    "port": {
                        "default": 9000,
                        "allowed": [80, 8080],
                        "allowed_ranges": [{"from": 9000, "to": 9100}],
                    },
                    "replace": {"pattern": ".pods.internal", "substitution": ".pod.cluster.local"},
                    "allow_loopback": True,
                    "allow_link_local": True,
                    "allow_private": False,
                    "connect_timeout": "750ms",
                },
                {
                    "dns_name": "*.denied.internal",
                    "port": {"default": 80},
                    "replace": {"pattern": "x"},
                },
            ]
        ),
        lambda c: c.adhoc,
        (
            AdhocRule(
                dns_name="*.pods.internal",
                default_port=9000,
                allowed_ports=(80, 8080),
                allowed_port_ranges=(PortRange(9000, 9100),),
                replace_pattern=".pods.internal",
                replace_substitution=".pod.cluster.local",
                allow_loopback=True,
                allow_link_local=True,
                allow_private=False,
                connect_timeout=0.75,
            ),
            AdhocRule("*.denied.internal", replace_pattern="x"),
        ),
    ),
    (
        "null values count as absent",
        _with(adhoc=None, limits=None, demo_backend=None),
        lambda c: (c.adhoc, c.limits, c.demo_backend),
        ((), LimitsConfig(), None),
    ),
    (
        "no backends and no routes (adhoc only)",
        {"listeners": BASE["listeners"], "adhoc": [{"dns_name": "a.internal"}]},
        lambda c: (c.backends, c.routes),
        ((), ()),
    ),
]


@pytest.mark.parametrize(
    ("data", "pick", "expected"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD]
)
def test_good_configs(data: dict[str, Any], pick: Any, expected: Any) -> None:
    assert pick(_parse(data)) == expected


# --- bad configs ------------------------------------------------------------------------

BAD: list[tuple[str, object, str, str, str]] = [
    # (id, data, key path, problem substring, fix substring)
    ("empty file", None, "(top level)", "empty", "edge-minimal.yaml"),
    ("not a mapping", ["x"], "(top level)", "expected a mapping", "key: value"),
    (
        "unknown top-level key",
        _with(rotues=[]),
        "rotues",
        "unknown key 'rotues'",
        "did you mean 'routes'",
    ),
    (
        "no listeners",
        {"routes": []},
        "listeners",
        "missing required key",
        "address: 127.0.0.1:8080",
    ),
    ("empty listeners", _with(listeners=[]), "listeners", "the list is empty", "at least one"),
    (
        "listener without address",
        _with(listeners=[{"name": "a"}]),
        "listeners[0].address",
        "missing required key",
        "127.0.0.1:8080",
    ),
    (
        "duplicate listener names",
        _with(
            listeners=[
                {"name": "a", "address": "127.0.0.1:1"},
                {"name": "a", "address": "127.0.0.1:2"},
            ]
        ),
        "listeners[1].name",
        "duplicate listener name 'a' (also listeners[0].name)",
        "unique",
    ),
    (
        "two listeners on one address",
        _with(listeners=[{"address": "127.0.0.1:80"}, {"address": "127.0.0.1:80"}]),
        "listeners[1].address",
        "already used by listeners[0].address",
        "its own port",
    ),
    (
        "default admin address taken by a listener",
        _with(listeners=[{"address": "127.0.0.1:9901"}]),
        "admin.address",
        "address 127.0.0.1:9901 (the default) is already used by listeners[0].address",
        "its own port",
    ),
    (
        "admin on a listener's address",
        _with(admin={"address": "127.0.0.1:8080"}),
        "admin.address",
        "already used by listeners[0].address",
        "its own port",
    ),
    (
        "ipv6 without brackets",
        _with(listeners=[{"address": "::1:8080"}]),
        "listeners[0].address",
        "needs brackets",
        "[::1]:8080",
    ),
    (
        "bare tls",
        _with(listeners=[{"address": "127.0.0.1:1", "tls": None}]),
        "listeners[0].tls",
        "no value",
        "remove `tls`",
    ),
    (
        "listener tls cert missing",
        _with(
            listeners=[
                {
                    "address": "127.0.0.1:1",
                    "tls": {"cert_file": "/nonexistent/c.pem", "key_file": "k"},
                }
            ]
        ),
        "listeners[0].tls.cert_file",
        "does not exist",
        "existing file",
    ),
    (
        "listener tls without key",
        _with(listeners=[{"address": "127.0.0.1:1", "tls": {"cert_file": "c"}}]),
        "listeners[0].tls.key_file",
        "missing required key",
        "key",
    ),
    (
        "size garbage",
        _with(limits={"max_header_bytes": "lots"}),
        "limits.max_header_bytes",
        "not a size",
        "64KiB",
    ),
    (
        "size zero",
        _with(limits={"max_uri_bytes": 0}),
        "limits.max_uri_bytes",
        "greater than zero",
        "64KiB",
    ),
    (
        "negative count",
        _with(limits={"max_header_count": -1}),
        "limits.max_header_count",
        "below the minimum",
        "at least 1",
    ),
    (
        "limit typo",
        _with(limits={"max_header_byte": 1}),
        "limits.max_header_byte",
        "unknown key",
        "'max_header_bytes'",
    ),
    ("negative duration", _with(timeouts={"drain": "-1s"}), "timeouts.drain", "negative", "10s"),
    (
        "zero header timeout",
        _with(timeouts={"request_header": 0}),
        "timeouts.request_header",
        "greater than zero",
        "10s",
    ),
    (
        "bad boolean",
        _with(access_log="yes please"),
        "access_log",
        "expected true or false",
        "without quotes",
    ),
    (
        "backend without name",
        _with(backends=[{"resolver": {}}]),
        "backends[0].name",
        "missing required key",
        "name: api",
    ),
    (
        "bad backend name",
        _with(backends=[{"name": "My API", "resolver": BASE["backends"][0]["resolver"]}]),
        "backends[0].name",
        "invalid backend name 'My API'",
        "'my-api'",
    ),
    (
        "duplicate backend names",
        _with(backends=[BASE["backends"][0], BASE["backends"][0]]),
        "backends[1].name",
        "duplicate backend name 'demo' (also backends[0].name)",
        "unique",
    ),
    ("no resolver", _backend(), "backends[0].resolver", "missing required key", "static"),
    (
        "empty resolver",
        _backend(resolver={}),
        "backends[0].resolver",
        "no resolver given",
        "exactly one",
    ),
    (
        "two resolvers",
        _backend(
            resolver={
                "static": {"endpoints": ["127.0.0.1:1"]},
                "dns": {"name": "a.test", "port": 1},
            }
        ),
        "backends[0].resolver",
        "several resolvers given: static, dns",
        "keep exactly one",
    ),
    (
        "unknown resolver",
        _backend(resolver={"consul": {}}),
        "backends[0].resolver.consul",
        "unknown key",
        "static",
    ),
    (
        "empty endpoints",
        _backend(resolver={"static": {"endpoints": []}}),
        "backends[0].resolver.static.endpoints",
        "empty",
        "at least one",
    ),
    (
        "endpoint of the wrong type",
        _backend(resolver={"static": {"endpoints": [9000]}}),
        "backends[0].resolver.static.endpoints[0]",
        'expected "host:port"',
        "127.0.0.1:9000",
    ),
    (
        "duplicate endpoint",
        _backend(resolver={"static": {"endpoints": ["127.0.0.1:1", {"address": "127.0.0.1:1"}]}}),
        "backends[0].resolver.static.endpoints[1]",
        "duplicate endpoint 127.0.0.1:1",
        "weight",
    ),
    (
        "zero weight",
        _backend(resolver={"static": {"endpoints": [{"address": "127.0.0.1:1", "weight": 0}]}}),
        "backends[0].resolver.static.endpoints[0].weight",
        "below the minimum 1",
        "at least 1",
    ),
    (
        "numeric label value",
        _backend(
            resolver={"static": {"endpoints": [{"address": "127.0.0.1:1", "labels": {"zone": 1}}]}}
        ),
        "backends[0].resolver.static.endpoints[0].labels.zone",
        "expected a string",
        "quote it",
    ),
    (
        "dns name is an ip",
        _backend(resolver={"dns": {"name": "10.0.0.1", "port": 80}}),
        "backends[0].resolver.dns.name",
        "is an IP address",
        "static",
    ),
    (
        "dns without port",
        _backend(resolver={"dns": {"name": "a.test"}}),
        "backends[0].resolver.dns.port",
        "missing required key",
        "port: 80",
    ),
    (
        "dns ttls reversed",
        _backend(
            resolver={"dns": {"name": "a.test", "port": 1, "min_ttl": "10m", "max_ttl": "1m"}}
        ),
        "backends[0].resolver.dns.max_ttl",
        "greater than max_ttl",
        "min_ttl <= max_ttl",
    ),
    (
        "dns bad family",
        _backend(resolver={"dns": {"name": "a.test", "port": 1, "families": ["A", "MX"]}}),
        "backends[0].resolver.dns.families[1]",
        "unknown address family 'MX'",
        "A, AAAA",
    ),
    (
        "srv bad name",
        _backend(resolver={"srv": {"name": "not a name"}}),
        "backends[0].resolver.srv.name",
        "not a valid DNS name",
        "svc.example.test",
    ),
    (
        "balancer typo",
        _backend(resolver=BASE["backends"][0]["resolver"], balancer="roundrobin"),
        "backends[0].balancer",
        "not a valid choice",
        "did you mean 'round_robin'",
    ),
    (
        "backend cert without key",
        _backend(resolver=BASE["backends"][0]["resolver"], tls={"cert_file": "/etc/hostname"}),
        "backends[0].tls.key_file",
        "cert_file is set but key_file is not",
        "both cert_file and key_file",
    ),
    (
        "backend ca missing",
        _backend(resolver=BASE["backends"][0]["resolver"], tls={"ca_file": "/nonexistent/ca.pem"}),
        "backends[0].tls.ca_file",
        "does not exist",
        "existing file",
    ),
    (
        "backend tls typo",
        _backend(resolver=BASE["backends"][0]["resolver"], tls={"insecure_skip_verfy": True}),
        "backends[0].tls.insecure_skip_verfy",
        "unknown key",
        "'insecure_skip_verify'",
    ),
    (
        "zero retries",
        _backend(resolver=BASE["backends"][0]["resolver"], retries={"attempts": 0}),
        "backends[0].retries.attempts",
        "below the minimum 1",
        "at least 1",
    ),
    (
        "route without backend",
        _route(backend=None),
        "routes[0].backend",
        "missing required key",
        "backend",
    ),
    (
        "unknown backend",
        _route(backend="dmeo"),
        "routes[0].backend",
        "unknown backend 'dmeo'",
        "did you mean 'demo'? known backends: demo",
    ),
    (
        "backend but none defined",
        _with(backends=[], routes=[{"backend": "api"}]),
        "routes[0].backend",
        "unknown backend 'api'",
        "define a backend named 'api' under `backends:`",
    ),
    (
        "duplicate route names",
        _with(routes=[{"name": "r", "backend": "demo"}, {"name": "r", "backend": "demo"}]),
        "routes[1].name",
        "duplicate route name 'r' (also routes[0].name)",
        "unique",
    ),
    (
        "match typo",
        _route(mtach={}),
        "routes[0].mtach",
        "unknown key 'mtach'",
        "did you mean 'match'",
    ),
    (
        "host star alone",
        _route(match={"host": "*"}),
        "routes[0].match.host",
        "'*' alone",
        "remove the key",
    ),
    (
        "host star inside",
        _route(match={"host": "a.*.test"}),
        "routes[0].match.host",
        "whole first label",
        "*.example.test",
    ),
    (
        "host partial star",
        _route(match={"host": "*a.test"}),
        "routes[0].match.host",
        "whole first label",
        "*.example.test",
    ),
    (
        "host two stars",
        _route(match={"host": "*.*.test"}),
        "routes[0].match.host",
        "whole first label",
        "*.example.test",
    ),
    (
        "host empty label",
        _route(match={"host": "a..test"}),
        "routes[0].match.host",
        "empty label",
        "demo.local",
    ),
    (
        "host bad chars",
        _route(match={"host": "a/b.test"}),
        "routes[0].match.host",
        "label 'a/b'",
        "letters, digits",
    ),
    (
        "host with port",
        _route(match={"host": "a.test:80"}),
        "routes[0].match.host",
        "contains a port",
        "`port:`",
    ),
    (
        "host with underscore",
        _route(match={"host": "a_b.test"}),
        "routes[0].match.host",
        "label 'a_b' cannot appear in a request's host",
        "no '_'",
    ),
    (
        "host label with outer hyphen",
        _route(match={"host": "*.-a.test"}),
        "routes[0].match.host",
        "label '-a'",
        "inner '-'",
    ),
    (
        "path merged slashes",
        _route(match={"paths": ["/a//b"]}),
        "routes[0].match.paths[0]",
        "not in canonical form",
        "write '/a/b'",
    ),
    (
        "path dot segment",
        _route(match={"paths": ["/a/./b/*"]}),
        "routes[0].match.paths[0]",
        "not in canonical form",
        "write '/a/b/*'",
    ),
    (
        "path escaped unreserved",
        _route(match={"paths": ["/%7euser"]}),
        "routes[0].match.paths[0]",
        "not in canonical form",
        "write '/~user'",
    ),
    (
        "path encoded slash",
        _route(match={"paths": ["/a%2fb"]}),
        "routes[0].match.paths[0]",
        "can never match a request: encoded slash",
        "/prefix/*",
    ),
    (
        "path above root",
        _route(match={"paths": ["/../x"]}),
        "routes[0].match.paths[0]",
        "can never match a request",
        "/prefix/*",
    ),
    (
        "path non-ascii",
        _route(match={"paths": ["/café"]}),
        "routes[0].match.paths[0]",
        "only URI path characters",
        "percent-encode",
    ),
    (
        "path with space",
        _route(match={"paths": ["/a b"]}),
        "routes[0].match.paths[0]",
        "only URI path characters",
        "percent-encode",
    ),
    (
        "port out of range",
        _route(match={"port": 0}),
        "routes[0].match.port",
        "below the minimum 1",
        "at least 1",
    ),
    (
        "path without slash",
        _route(match={"paths": ["api"]}),
        "routes[0].match.paths[0]",
        "must start with '/'",
        "/prefix/*",
    ),
    (
        "path star inside",
        _route(match={"paths": ["/a/*/b"]}),
        "routes[0].match.paths[0]",
        "final '/*'",
        "/prefix/*",
    ),
    (
        "path glued star",
        _route(match={"paths": ["/ok", "/api*"]}),
        "routes[0].match.paths[1]",
        "final '/*'",
        "/prefix/*",
    ),
    (
        "path query",
        _route(match={"paths": ["/a?b=1"]}),
        "routes[0].match.paths[0]",
        "query",
        "without '?'",
    ),
    (
        "paths not a list",
        _route(match={"paths": "/a"}),
        "routes[0].match.paths",
        "expected a list",
        "YAML list",
    ),
    (
        "bad header name",
        _route(match={"headers": {"x env": "a"}}),
        "routes[0].match.headers.x env",
        "not a valid header name",
        "x-env",
    ),
    (
        "numeric header value",
        _route(match={"headers": {"x-v": 2}}),
        "routes[0].match.headers.x-v",
        "expected a string",
        "quote it",
    ),
    (
        "header value with spaces",
        _route(match={"headers": {"x-v": " a"}}),
        "routes[0].match.headers.x-v",
        "never match",
        "outer spaces",
    ),
    (
        "header with both exact and regex",
        _route(match={"headers": [{"name": "a", "exact": "1", "regex": "1"}]}),
        "routes[0].match.headers[0]",
        "exactly one of exact or regex",
        "exact: prod",
    ),
    (
        "header with neither",
        _route(match={"headers": [{"name": "a"}]}),
        "routes[0].match.headers[0]",
        "exactly one of exact or regex",
        "exact: prod",
    ),
    (
        "bad regex",
        _route(match={"headers": [{"name": "a", "regex": "(unclosed"}]}),
        "routes[0].match.headers[0].regex",
        "invalid regular expression: missing ), unterminated subpattern",
        "fix the pattern",
    ),
    (
        "headers wrong type",
        _route(match={"headers": "x-env=prod"}),
        "routes[0].match.headers",
        "expected a mapping",
        "x-env: prod",
    ),
    (
        "proxy mode typo",
        _route(match={"proxy_mode": "revers"}),
        "routes[0].match.proxy_mode",
        "not a valid choice",
        "'reverse'",
    ),
    (
        "route body limit garbage",
        _route(max_request_body_bytes="big"),
        "routes[0].max_request_body_bytes",
        "not a size",
        "64KiB",
    ),
    (
        "adhoc without name",
        _with(adhoc=[{"port": {}}]),
        "adhoc[0].dns_name",
        "missing required key",
        "*.pods.internal",
    ),
    (
        "adhoc bad pattern",
        _with(adhoc=[{"dns_name": "pods.*"}]),
        "adhoc[0].dns_name",
        "whole first label",
        "*.example.test",
    ),
    (
        "adhoc default not allowed",
        _with(adhoc=[{"dns_name": "a.internal", "port": {"default": 80, "allowed": [8080]}}]),
        "adhoc[0].port.default",
        "default port 80 is not in allowed",
        "add 80 to port.allowed",
    ),
    (
        "adhoc range reversed",
        _with(
            adhoc=[{"dns_name": "a.internal", "port": {"allowed_ranges": [{"from": 90, "to": 80}]}}]
        ),
        "adhoc[0].port.allowed_ranges[0]",
        "from (90) is greater than to (80)",
        "from <= to",
    ),
    (
        "adhoc replace without pattern",
        _with(adhoc=[{"dns_name": "a.internal", "replace": {"substitution": "b"}}]),
        "adhoc[0].replace.pattern",
        "missing required key",
        "pattern:",
    ),
    (
        "adhoc typo",
        _with(adhoc=[{"dns_name": "a.internal", "allow_privat": True}]),
        "adhoc[0].allow_privat",
        "unknown key",
        "'allow_private'",
    ),
    (
        "demo backend port zero",
        _with(demo_backend="127.0.0.1:0"),
        "demo_backend",
        "out of range",
        "1 to 65535",
    ),
    (
        "h2 backend without tls",
        _backend(protocol="h2", resolver={"static": {"endpoints": ["127.0.0.1:9000"]}}),
        "backends[0].protocol",
        "needs TLS",
        "protocol: h2c",
    ),
    (
        "h2c backend with tls",
        _backend(
            protocol="h2c",
            tls={"insecure_skip_verify": True},
            resolver={"static": {"endpoints": ["127.0.0.1:9000"]}},
        ),
        "backends[0].protocol",
        "cleartext",
        "protocol: h2",
    ),
    (
        "unknown backend protocol",
        _backend(protocol="http3", resolver={"static": {"endpoints": ["127.0.0.1:9000"]}}),
        "backends[0].protocol",
        "",
        "h2c",
    ),
    (
        "http2 frame size too small",
        _with(http2={"max_frame_size": 1000}),
        "http2.max_frame_size",
        "outside what HTTP/2 allows",
        "16384 to 16777215",
    ),
    (
        "http2 connection window below the initial",
        _with(http2={"initial_connection_window": 1000}),
        "http2.initial_connection_window",
        "below the protocol's initial",
        "65535 or more",
    ),
    (
        "http2 flood typo",
        _with(http2={"floods": {"max_ping": 1}}),
        "http2.floods.max_ping",
        "unknown key",
        "'max_pings'",
    ),
]


@pytest.mark.parametrize(
    ("data", "key_path", "problem", "fix"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_configs_name_the_key_and_the_fix(
    data: object, key_path: str, problem: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(data)
    err = info.value
    assert (err.key_path, err.file) == (key_path, "edge.yaml")
    assert problem in err.problem
    assert fix in err.fix
    assert str(err) == f"edge.yaml: {key_path}: {err.problem} (fix: {err.fix})"


# --- files ------------------------------------------------------------------------------


def _certs(directory: Path) -> None:
    """Real PEM files at the names the examples use (the parser checks only existence)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("api.example.test", "127.0.0.1")
    client = ca.issue_cert("edge.internal")
    server.cert_chain_pems[0].write_to_path(str(directory / "edge.pem"))
    server.private_key_pem.write_to_path(str(directory / "edge-key.pem"))
    ca.cert_pem.write_to_path(str(directory / "backend-ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client-key.pem"))
    empty_crl(ca, directory / "crl.pem")
    (directory / "kubeconfig.yaml").write_text(
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n"
    )
    assert sorted(p.name for p in directory.iterdir()) == sorted(EXAMPLE_CERT_FILES)


@pytest.mark.parametrize("name", ["edge-minimal.yaml", "edge-full.yaml", "edge-tls.yaml"])
def test_example_configs_parse(name: str, tmp_path: Path) -> None:
    # Relative cert paths resolve against the config's directory: copy it next to fresh certs.
    shutil.copy(CONFIGS / name, tmp_path / name)
    _certs(tmp_path / "certs")
    config = load_edge_config(str(tmp_path / name))
    assert config.source == str(tmp_path / name)
    assert config.listeners


def test_example_configs_are_all_tested() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == [
        "edge-full.yaml",
        "edge-minimal.yaml",
        "edge-tls.yaml",
        "winch.yaml",  # tests/unit/test_dialer_config.py
    ]


def test_full_example_uses_every_key(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / "edge-full.yaml", tmp_path / "edge.yaml")
    _certs(tmp_path / "certs")
    config = load_edge_config(str(tmp_path / "edge.yaml"))
    certs = tmp_path / "certs"
    assert config.listeners[1].tls == ListenerTls(
        str(certs / "edge.pem"),
        str(certs / "edge-key.pem"),
        ClientCertConfig(
            ClientCertMode.OPTIONAL,
            (str(certs / "backend-ca.pem"),),
            (str(certs / "crl.pem"),),
            NoEkuPolicy.REJECT,
        ),
        require_sni_match=True,
    )
    assert config.listeners[1].credentials == (
        CredentialSource.PROXY_AUTHORIZATION,
        CredentialSource.AUTHORIZATION,
    )
    assert {type(b.resolver) for b in config.backends} == {
        StaticResolverConfig,
        DnsResolverConfig,
        SrvResolverConfig,
        K8sResolverConfig,
    }
    assert config.backend("payments").resolver == K8sResolverConfig("payments", "api", "http")
    kube = config.kubernetes
    assert kube.kubeconfig == str(certs / "kubeconfig.yaml") and kube.context == "example"
    assert (kube.watch_timeout, kube.backoff_initial, kube.serve_terminating) == (300.0, 0.5, False)
    assert kube.discovery == DiscoveryConfig(
        "cluster-a.internal", "kedge.io/", ("apps", "payments"), 0.2
    )
    api = config.backend("api")
    assert api.tls == BackendTlsConfig(
        ca_file=str(certs / "backend-ca.pem"),
        server_name="api.internal",
        insecure_skip_verify=False,
        cert_file=str(certs / "client.pem"),
        key_file=str(certs / "client-key.pem"),
    )
    assert config.routes[0].max_request_body_bytes == 1024**3
    assert [len(r.match.headers) for r in config.routes] == [1, 2, 0, 0]
    assert config.routes[2].match.grpc_methods == ("kedge.e2e.Greeter/*", "kedge.e2e.Other/Ping")
    grpc = config.backend("grpc")
    assert grpc.protocol is UpstreamProtocol.H2C
    assert config.http2.floods.max_resets == 200
    assert config.backend("web").timeouts.max_grpc_timeout == 300.0
    rule = config.adhoc[0]
    assert (rule.allowed_ports, rule.allowed_port_ranges) == ((80, 8080), (PortRange(9000, 9100),))
    assert rule.replace_substitution == ".pod.cluster.local"
    api_auth = config.routes[0].auth
    assert api_auth == RouteAuth(
        permissions=("api.read", "api.admin"),
        principals=(
            PrincipalPattern(PrincipalKind.GROUP, "ops"),
            PrincipalPattern(PrincipalKind.URI, "spiffe://cluster.example.test/ns/apps/", True),
        ),
    )
    assert config.routes[2].auth == RouteAuth(anonymous=True)
    auth = config.auth
    assert auth is not None and auth.adhoc == RouteAuth(anonymous=True)
    assert (auth.max_token_bytes, auth.identity_header) == (8192, "x-kedge-principal")
    corp = auth.issuers[0]
    assert (corp.name, corp.audiences, corp.algorithms) == ("corp", ("kedge",), ("RS256", "ES256"))
    assert (corp.jwks_ttl, corp.jwks_max_stale, corp.max_lifetime) == (300.0, 86400.0, 86400.0)


def test_relative_paths_without_base_dir_are_read_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _certs(tmp_path / "certs")
    monkeypatch.chdir(tmp_path)
    data = _with(
        listeners=[
            {
                "address": "127.0.0.1:1",
                "tls": {"cert_file": "certs/edge.pem", "key_file": "certs/edge-key.pem"},
            }
        ]
    )
    assert _parse(data).listeners[0].tls == ListenerTls("certs/edge.pem", "certs/edge-key.pem")


def test_relative_paths_with_base_dir(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    data = _with(
        listeners=[
            {"address": "127.0.0.1:1", "tls": {"cert_file": "certs/edge.pem", "key_file": "k"}}
        ]
    )
    with pytest.raises(ConfigError) as info:
        _parse(data, base_dir=tmp_path)
    assert info.value.key_path == "listeners[0].tls.cert_file"
    assert f"relative paths are read from {tmp_path}" in info.value.problem


def test_load_edge_config_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(_route(backend="nope")), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_edge_config(str(path))
    assert info.value.file == str(path)
    assert info.value.key_path == "routes[0].backend"


def test_load_edge_config_yaml_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("listeners:\n  - address: 127.0.0.1:80\nroutes: [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_edge_config(str(path))
    assert info.value.file == str(path)
    assert info.value.key_path.startswith("line ")


# --- the embedded demo ------------------------------------------------------------------


def test_embedded_demo_config() -> None:
    demo = embedded_demo_config()
    assert demo == EdgeConfig(
        source=DEMO_SOURCE,
        listeners=(ListenerConfig("http", Address("127.0.0.1", 8080)),),
        admin=AdminConfig(Address("127.0.0.1", 9901)),
        demo_backend=Address("127.0.0.1", 9902),
        backends=(
            BackendConfig(
                "demo", StaticResolverConfig((StaticEndpoint(Address("127.0.0.1", 9902)),))
            ),
        ),
        routes=(
            RouteConfig("demo", "demo", RouteMatch(host="demo.local", proxy_mode=ProxyMode.ANY)),
        ),
    )
    assert demo.listeners[0].scheme == "http"


# --- docs and examples stay complete ----------------------------------------------------


def _yaml_keys(value: object, skip: frozenset[str] = frozenset({"labels", "headers"})) -> set[str]:
    """Every mapping key in a YAML tree, not descending into data mappings (labels, headers)."""
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            keys.add(str(key))
            if not (key in skip and isinstance(child, dict)):
                keys |= _yaml_keys(child, skip)
    elif isinstance(value, list):
        for child in value:
            keys |= _yaml_keys(child, skip)
    return keys


SCHEMA_KEYS = (
    {f.name for f in dataclasses.fields(EdgeConfig)} - {"source"}
    | {f.name for f in dataclasses.fields(ListenerConfig)}
    | {f.name for f in dataclasses.fields(ListenerTls)}
    | {f.name for f in dataclasses.fields(LimitsConfig)}
    | {f.name for f in dataclasses.fields(TimeoutsConfig)}
    | {f.name for f in dataclasses.fields(BackendConfig)}
    | {f.name for f in dataclasses.fields(StaticEndpoint)}
    | {f.name for f in dataclasses.fields(DnsResolverConfig)}
    | {f.name for f in dataclasses.fields(SrvResolverConfig)}
    | {f.name for f in dataclasses.fields(BackendTlsConfig)}
    | {f.name for f in dataclasses.fields(PoolConfig)}
    | {f.name for f in dataclasses.fields(BackendTimeouts)}
    | {f.name for f in dataclasses.fields(RetryConfig)}
    | {f.name for f in dataclasses.fields(RouteConfig)}
    | {f.name for f in dataclasses.fields(RouteMatch)}
    | {f.name for f in dataclasses.fields(HeaderMatch)}
    | {"static", "dns", "srv", "endpoints"}
    # adhoc keys differ from AdhocRule's flattened field names
    | {"dns_name", "port", "default", "allowed", "allowed_ranges", "from", "to", "replace"}
    | {"pattern", "substitution", "allow_loopback", "allow_link_local", "allow_private"}
    | {"connect_timeout"}
    | {f.name for f in dataclasses.fields(ClientCertConfig)}
    | {f.name for f in dataclasses.fields(AuthConfig)}
    | {f.name for f in dataclasses.fields(IssuerConfig)}
    | {f.name for f in dataclasses.fields(RouteAuth)} - {"permission_mode"}
    | {"any_of"}
    | {f.name for f in dataclasses.fields(KubernetesConfig)}
    | {f.name for f in dataclasses.fields(DiscoveryConfig)}
    | {f.name for f in dataclasses.fields(LocalityConfig)}
    | {f.name for f in dataclasses.fields(RemoteClusterConfig)}
    | {f.name for f in dataclasses.fields(HealthCheckConfig)} - {"probe"}
    | {"http", "grpc", "tcp"}
    | {f.name for f in dataclasses.fields(HttpHealthCheck)}
    | {f.name for f in dataclasses.fields(GrpcHealthCheck)}
    | {f.name for f in dataclasses.fields(OutlierDetectionConfig)}
    | {"k8s"}
)


def test_full_example_contains_every_schema_key() -> None:
    data = yaml.safe_load((CONFIGS / "edge-full.yaml").read_text(encoding="utf-8"))
    assert SCHEMA_KEYS - _yaml_keys(data) == set()


def test_readme_documents_every_schema_key() -> None:
    readme = (CONFIGS / "README.md").read_text(encoding="utf-8")
    undocumented = {
        key for key in SCHEMA_KEYS if not re.search(rf"`([\w\[\]]+\.)*{re.escape(key)}`", readme)
    }
    assert undocumented == set()
    assert "## Errors" in readme

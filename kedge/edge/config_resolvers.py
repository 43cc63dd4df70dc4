"""Parsing of backend resolvers (static, dns, srv, k8s) for the edge config (see config_parser).

Every refusal names the key path and a fix; DNS names and addresses are checked here so a
resolver never starts with a target it cannot use.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from kedge.core.config_loading import Fields, Node, dataclass_keys, is_dns_name
from kedge.edge.config import (
    Address,
    DnsResolverConfig,
    ResolverConfig,
    SrvResolverConfig,
    StaticEndpoint,
    StaticResolverConfig,
)
from kedge.edge.config_kubernetes import parse_k8s_resolver

__all__ = ["address_of", "dns_name", "parse_resolver"]


def address_of(node: Node, *, allow_port_zero: bool = False) -> Address:
    host, port = node.as_address(allow_port_zero=allow_port_zero)
    return Address(host, port)


_RESOLVER_KINDS = ("static", "dns", "srv", "k8s")


def parse_resolver(node: Node) -> ResolverConfig:
    f = node.as_mapping(_RESOLVER_KINDS)
    given = [k for k in _RESOLVER_KINDS if k in f]
    if len(given) != 1:
        problem = (
            "no resolver given" if not given else f"several resolvers given: {', '.join(given)}"
        )
        raise node.error(
            f"{problem}; exactly one of static, dns, srv, k8s is needed", "keep exactly one"
        )
    kind = given[0]
    n = node.child(kind)
    if kind == "static":
        return _static(n)
    if kind == "dns":
        return _dns(n)
    if kind == "k8s":
        return parse_k8s_resolver(n)
    return _srv(n)


def _static(node: Node) -> StaticResolverConfig:
    f = node.as_mapping(dataclass_keys(StaticResolverConfig))
    items = f.require("endpoints", "e.g. `endpoints: [127.0.0.1:9000]`").as_list(allow_empty=False)
    seen: dict[Address, str] = {}
    out: list[StaticEndpoint] = []
    for item in items:
        endpoint = _static_endpoint(item)
        if endpoint.address in seen:
            raise item.error(
                f"duplicate endpoint {endpoint.address} (also {seen[endpoint.address]})",
                "list each address once; use weight to send it more traffic",
            )
        seen[endpoint.address] = item.path
        out.append(endpoint)
    return StaticResolverConfig(tuple(out))


def _static_endpoint(item: Node) -> StaticEndpoint:
    if isinstance(item.value, str):
        return StaticEndpoint(address_of(item))
    if not isinstance(item.value, dict):
        raise item.error(
            'expected "host:port" or a mapping with address, labels, weight',
            "write `- 127.0.0.1:9000` or `- {address: 127.0.0.1:9000, weight: 2}`",
        )
    f = item.as_mapping(("address", "labels", "weight"))
    base = StaticEndpoint(address_of(f.require("address", "e.g. `address: 127.0.0.1:9000`")))
    labels = base.labels
    if (n := f.get("labels")) is not None:
        g = n.as_mapping()
        labels = tuple(sorted((k, n.child(k).as_str(allow_empty=True)) for k in g))
    return StaticEndpoint(base.address, labels, f.get_int("weight", base.weight, minimum=1))


def dns_name(node: Node) -> str:
    name = node.as_str()
    if not is_dns_name(name):
        raise node.error(f"{name!r} is not a valid DNS name", "e.g. svc.example.test")
    return name.lower()


def _resolver_name(node: Node) -> str:
    name = dns_name(node)
    try:
        ipaddress.ip_address(name.rstrip("."))
    except ValueError:
        return name
    raise node.error(
        f"{name!r} is an IP address, not a DNS name", "use a `static` resolver for fixed IPs"
    )


def _ttls(f: Fields, min_default: float, max_default: float) -> tuple[float, float]:
    min_ttl = f.get_duration("min_ttl", min_default)
    max_ttl = f.get_duration("max_ttl", max_default, allow_zero=False)
    if min_ttl > max_ttl:
        key = "max_ttl" if "max_ttl" in f else "min_ttl"
        raise f.node.child(key).error(
            f"min_ttl ({min_ttl:g}s) is greater than max_ttl ({max_ttl:g}s)",
            "make min_ttl <= max_ttl",
        )
    return min_ttl, max_ttl


def _nameservers(node: Node | None, default: tuple[Address, ...]) -> tuple[Address, ...]:
    return default if node is None else tuple(address_of(n) for n in node.as_list())


def _dns(node: Node) -> DnsResolverConfig:
    f = node.as_mapping(dataclass_keys(DnsResolverConfig))
    base = DnsResolverConfig(
        name=_resolver_name(f.require("name", "e.g. `name: svc.example.test`")),
        port=f.require("port", "e.g. `port: 80`").as_port(),
    )
    min_ttl, max_ttl = _ttls(f, base.min_ttl, base.max_ttl)
    families = base.families
    if (n := f.get("families")) is not None:
        families = _families(n)
    return DnsResolverConfig(
        base.name,
        base.port,
        min_ttl,
        max_ttl,
        _nameservers(f.get("nameservers"), base.nameservers),
        families,
    )


def _families(node: Node) -> tuple[Literal["A", "AAAA"], ...]:
    out: list[Literal["A", "AAAA"]] = []
    for item in node.as_list(allow_empty=False):
        text = item.as_str().upper()
        family: Literal["A", "AAAA"]
        if text == "A":
            family = "A"
        elif text == "AAAA":
            family = "AAAA"
        else:
            raise item.error(f"unknown address family {item.value!r}", "use A, AAAA or both")
        if family in out:
            raise item.error(f"{family} is listed twice", "list each family once")
        out.append(family)
    return tuple(out)


def _srv(node: Node) -> SrvResolverConfig:
    f = node.as_mapping(dataclass_keys(SrvResolverConfig))
    base = SrvResolverConfig(
        _resolver_name(f.require("name", "e.g. `name: _http._tcp.svc.example.test`"))
    )
    min_ttl, max_ttl = _ttls(f, base.min_ttl, base.max_ttl)
    port_override = n.as_port() if (n := f.get("port_override")) else base.port_override
    return SrvResolverConfig(
        base.name,
        port_override,
        min_ttl,
        max_ttl,
        _nameservers(f.get("nameservers"), base.nameservers),
    )

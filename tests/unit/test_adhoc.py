"""Tests for kedge.edge.discovery.adhoc: name and port matching, replacement, IP policy."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import replace

import pytest

from kedge.core.errors import Forbidden, UpstreamConnectError
from kedge.edge.config import Address, AdhocRule, PortRange
from kedge.edge.discovery.adhoc import (
    AddressClass,
    AdhocDecision,
    classify_address,
    is_address_allowed,
    is_name_match,
    match_adhoc,
    resolve_adhoc,
    system_resolve,
)

WEB = AdhocRule(
    dns_name="*.svc.test",
    default_port=80,
    allowed_ports=(80, 443),
    allowed_port_ranges=(PortRange(8000, 8100),),
)

# --- names ---------------------------------------------------------------------------------

NAMES = [
    ("a.test", "a.test", True),
    ("a.test", "b.a.test", False),
    ("a.test", "a.test.evil.test", False),
    ("*.svc.test", "x.svc.test", True),
    ("*.svc.test", "x.y.svc.test", True),  # any depth below the suffix
    ("*.svc.test", "svc.test", False),  # not the bare suffix
    ("*.svc.test", "xsvc.test", False),  # a label boundary, not a string suffix
    ("*.svc.test", "x.svc.test.evil.test", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), NAMES)
def test_name_match(pattern: str, name: str, expected: bool) -> None:
    assert is_name_match(pattern, name) is expected


@pytest.mark.parametrize("host", ["API.Svc.Test", "api.svc.test."])
def test_host_is_compared_lower_case_without_the_root_dot(host: str) -> None:
    assert match_adhoc([WEB], host, 80) == AdhocDecision(WEB, "api.svc.test", 80)


def test_no_matching_rule_returns_none() -> None:
    assert match_adhoc([WEB], "api.other.test", 80) is None
    assert match_adhoc([], "api.svc.test", 80) is None


# --- ports ---------------------------------------------------------------------------------

PORTS = [
    (80, True),
    (443, True),
    (8000, True),  # range bounds are inclusive
    (8050, True),
    (8100, True),
    (7999, False),
    (8101, False),
    (22, False),
    (0, False),
    (65536, False),
]


@pytest.mark.parametrize(("port", "allowed"), PORTS)
def test_port_must_be_listed_or_in_a_range(port: int, allowed: bool) -> None:
    if allowed:
        assert match_adhoc([WEB], "a.svc.test", port) == AdhocDecision(WEB, "a.svc.test", port)
    else:
        with pytest.raises(Forbidden) as info:
            match_adhoc([WEB], "a.svc.test", port)
        assert info.value.reason == f"adhoc: port {port} is not allowed for *.svc.test"


def test_missing_port_takes_the_default() -> None:
    assert match_adhoc([WEB], "a.svc.test", None) == AdhocDecision(WEB, "a.svc.test", 80)


def test_default_port_must_be_allowed_too() -> None:
    rule = AdhocRule(dns_name="*.svc.test", default_port=80, allowed_ports=(443,))
    with pytest.raises(Forbidden, match="port 80 is not allowed"):
        match_adhoc([rule], "a.svc.test", None)
    assert match_adhoc([rule], "a.svc.test", 443) is not None


def test_first_matching_rule_decides_without_fall_through() -> None:
    narrow = AdhocRule(dns_name="*.svc.test", allowed_ports=(80,))
    broad = AdhocRule(dns_name="*.test", allowed_ports=(80, 8080))
    with pytest.raises(Forbidden) as info:
        match_adhoc([narrow, broad], "a.svc.test", 8080)
    assert info.value.reason == "adhoc: port 8080 is not allowed for *.svc.test"
    assert match_adhoc([narrow, broad], "a.other.test", 8080) == AdhocDecision(
        broad, "a.other.test", 8080
    )


# --- replacement ---------------------------------------------------------------------------

REPLACE = AdhocRule(
    dns_name="*.ext.test",
    allowed_ports=(80,),
    replace_pattern="-dot-",
    replace_substitution=".",
)

REPLACEMENTS = [
    ("api-dot-ns.ext.test", "api.ns.ext.test"),
    ("a-dot-b-dot-c.ext.test", "a.b.c.ext.test"),  # every occurrence
]


@pytest.mark.parametrize(("host", "lookup_name"), REPLACEMENTS)
def test_replace_pattern(host: str, lookup_name: str) -> None:
    assert match_adhoc([REPLACE], host, 80) == AdhocDecision(REPLACE, lookup_name, 80)


def test_replace_suffix_with_the_cluster_domain() -> None:
    rule = AdhocRule(
        dns_name="*.ext.test",
        allowed_ports=(80,),
        replace_pattern=".ext.test",
        replace_substitution=".svc.cluster.local",
    )
    decision = match_adhoc([rule], "api.ns.ext.test", None)
    assert decision is not None and decision.lookup_name == "api.ns.svc.cluster.local"


def test_name_without_the_pattern_is_forbidden() -> None:
    with pytest.raises(Forbidden, match="does not contain '-dot-'"):
        match_adhoc([REPLACE], "plain.ext.test", 80)


# --- IP policy -----------------------------------------------------------------------------

DEFAULT = AdhocRule(dns_name="*.test")
LOOPBACK_OK = replace(DEFAULT, allow_loopback=True)
LINK_LOCAL_OK = replace(DEFAULT, allow_link_local=True)
NO_PRIVATE = replace(DEFAULT, allow_private=False)

ADDRESSES = [
    # (address, class)
    ("8.8.8.8", AddressClass.PUBLIC),
    ("2606:4700::1111", AddressClass.PUBLIC),
    ("10.1.2.3", AddressClass.PRIVATE),
    ("172.16.0.1", AddressClass.PRIVATE),
    ("172.31.255.255", AddressClass.PRIVATE),
    ("172.32.0.1", AddressClass.PUBLIC),
    ("192.168.1.1", AddressClass.PRIVATE),
    ("100.64.0.1", AddressClass.PRIVATE),
    ("fd00::1", AddressClass.PRIVATE),
    ("127.0.0.1", AddressClass.LOOPBACK),
    ("127.1.2.3", AddressClass.LOOPBACK),
    ("::1", AddressClass.LOOPBACK),
    ("0.0.0.0", AddressClass.LOOPBACK),  # connecting to it reaches this host
    ("::", AddressClass.LOOPBACK),
    ("169.254.169.254", AddressClass.LINK_LOCAL),  # cloud metadata service
    ("169.254.0.1", AddressClass.LINK_LOCAL),
    ("fe80::1", AddressClass.LINK_LOCAL),
    ("224.0.0.1", AddressClass.NEVER),
    ("ff02::1", AddressClass.NEVER),
    ("255.255.255.255", AddressClass.NEVER),
    # IPv6 spellings of IPv4 addresses are judged by the IPv4 address they carry.
    ("::ffff:127.0.0.1", AddressClass.LOOPBACK),
    ("::ffff:169.254.169.254", AddressClass.LINK_LOCAL),
    ("::ffff:10.0.0.1", AddressClass.PRIVATE),
    ("::ffff:8.8.8.8", AddressClass.PUBLIC),
    ("64:ff9b::7f00:1", AddressClass.LOOPBACK),  # NAT64 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", AddressClass.LINK_LOCAL),  # NAT64 of 169.254.169.254
    ("64:ff9b::808:808", AddressClass.PUBLIC),
    ("::127.0.0.1", AddressClass.LOOPBACK),  # deprecated IPv4-compatible form
    ("::ffff:0:7f00:1", AddressClass.LOOPBACK),  # SIIT IPv4-translated form
]


@pytest.mark.parametrize(("text", "expected"), ADDRESSES)
def test_classify_address(text: str, expected: AddressClass) -> None:
    assert classify_address(ipaddress.ip_address(text)) is expected


POLICY = [
    # (address, rule, allowed)
    ("8.8.8.8", DEFAULT, True),
    ("8.8.8.8", NO_PRIVATE, True),
    ("10.1.2.3", DEFAULT, True),
    ("10.1.2.3", NO_PRIVATE, False),
    ("fd00::1", NO_PRIVATE, False),
    ("100.64.0.1", NO_PRIVATE, False),
    ("::ffff:10.0.0.1", NO_PRIVATE, False),
    ("127.0.0.1", DEFAULT, False),
    ("127.0.0.1", LOOPBACK_OK, True),
    ("127.0.0.1", LINK_LOCAL_OK, False),
    ("::ffff:127.0.0.1", DEFAULT, False),
    ("::ffff:127.0.0.1", LOOPBACK_OK, True),
    ("64:ff9b::7f00:1", DEFAULT, False),
    ("0.0.0.0", DEFAULT, False),
    ("0.0.0.0", LOOPBACK_OK, True),
    ("::", DEFAULT, False),
    ("::1", DEFAULT, False),
    ("169.254.169.254", DEFAULT, False),
    ("169.254.169.254", LOOPBACK_OK, False),
    ("169.254.169.254", LINK_LOCAL_OK, True),
    ("::ffff:169.254.169.254", DEFAULT, False),
    ("fe80::1", DEFAULT, False),
    ("fe80::1", LINK_LOCAL_OK, True),
    ("224.0.0.1", replace(DEFAULT, allow_loopback=True, allow_link_local=True), False),
    ("ff02::1", LINK_LOCAL_OK, False),
]


@pytest.mark.parametrize(("text", "rule", "allowed"), POLICY)
def test_is_address_allowed(text: str, rule: AdhocRule, allowed: bool) -> None:
    assert is_address_allowed(ipaddress.ip_address(text), rule) is allowed


# --- resolve_adhoc -------------------------------------------------------------------------


def decision(name: str = "api.svc.test", rule: AdhocRule = DEFAULT) -> AdhocDecision:
    return AdhocDecision(rule, name, 8080)


async def test_first_allowed_address_is_returned() -> None:
    async def resolve(name: str) -> list[str]:
        assert name == "api.svc.test"
        return ["127.0.0.1", "169.254.169.254", "10.0.0.5", "10.0.0.6"]

    assert await resolve_adhoc(decision(), resolve) == Address("10.0.0.5", 8080)


async def test_ip_literal_is_not_resolved() -> None:
    async def resolve(name: str) -> list[str]:
        raise AssertionError("an IP literal must not be looked up")

    assert await resolve_adhoc(decision("10.0.0.7"), resolve) == Address("10.0.0.7", 8080)
    assert await resolve_adhoc(decision("[fd00::7]"), resolve) == Address("fd00::7", 8080)
    with pytest.raises(Forbidden, match="resolves only to denied addresses"):
        await resolve_adhoc(decision("169.254.169.254"), resolve)


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1"], ["169.254.169.254", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "0.0.0.0"]],
)
async def test_only_denied_addresses_is_forbidden(addresses: list[str]) -> None:
    async def resolve(name: str) -> list[str]:
        return addresses

    with pytest.raises(Forbidden) as info:
        await resolve_adhoc(decision(), resolve)
    assert info.value.reason == "adhoc: api.svc.test resolves only to denied addresses"


async def test_private_addresses_denied_when_the_rule_says_so() -> None:
    async def resolve(name: str) -> list[str]:
        return ["10.0.0.5"]

    with pytest.raises(Forbidden):
        await resolve_adhoc(decision(rule=NO_PRIVATE), resolve)


async def test_no_address_is_a_connect_error() -> None:
    async def empty(name: str) -> list[str]:
        return []

    async def failing(name: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def hanging(name: str) -> list[str]:
        await asyncio.sleep(10)
        return ["10.0.0.1"]

    for resolve in (empty, failing):
        with pytest.raises(UpstreamConnectError) as info:
            await resolve_adhoc(decision(), resolve)
        assert info.value.reason == "adhoc: cannot resolve api.svc.test"
    with pytest.raises(UpstreamConnectError):
        await resolve_adhoc(decision(), hanging, lookup_timeout=0.05)


async def test_system_resolve_takes_numeric_hosts_without_dns() -> None:
    assert await system_resolve("127.0.0.1") == ["127.0.0.1"]

"""k8s targets and EndpointSlice merging: pure, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from kedge.edge.config import Address
from kedge.edge.discovery.kubernetes.slices import endpoints_from_slices, slice_port
from kedge.edge.discovery.kubernetes.target import K8sTarget, parse_k8s_target


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("api.payments:http", K8sTarget("payments", "api", "http")),
        ("api.payments:8080", K8sTarget("payments", "api", 8080)),
        ("api.payments.svc.cluster.local:grpc-web", K8sTarget("payments", "api", "grpc-web")),
        ("a.b.anything.at.all:1", K8sTarget("b", "a", 1)),
    ],
)
def test_targets_parse(text: str, target: K8sTarget) -> None:
    assert parse_k8s_target(text) == target


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("api:http", "a service and its namespace"),
        ("api.payments", "needs a port"),
        ("api.payments:", "needs a port"),
        ("http://api.payments:80", "no scheme"),
        ("API.payments:80", "not a valid Kubernetes name"),
        ("api.pay_ments:80", "not a valid Kubernetes name"),
        ("api.payments:0", "out of range"),
        ("api.payments:70000", "out of range"),
        ("api.payments:Http", "neither a port number nor a port name"),
        ("api.payments:a-very-long-port-name", "neither a port number nor a port name"),
    ],
)
def test_bad_targets_say_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_k8s_target(text)


def _slice(
    endpoints: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    }


def _ep(ip: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": conditions}


def _keys(slices: list[dict[str, Any]], port: int | str = "http", **kw: bool) -> list[str]:
    return [e.key for e in endpoints_from_slices(slices, port, **kw)]


def test_every_slice_and_endpoint_counts() -> None:
    slices = [
        _slice([_ep("10.0.0.1"), _ep("10.0.0.2", ready=True)]),
        _slice([_ep("10.0.0.3")]),
    ]
    assert _keys(slices) == ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]


def test_a_port_name_resolves_per_slice() -> None:
    slices = [
        _slice([_ep("10.0.0.1")], [{"name": "http", "port": 8080}]),
        _slice([_ep("10.0.0.2")], [{"name": "http", "port": 9090}, {"name": "m", "port": 1}]),
        _slice([_ep("10.0.0.3")], [{"name": "metrics", "port": 9100}]),
    ]
    assert _keys(slices) == ["10.0.0.1:8080", "10.0.0.2:9090"]
    assert _keys(slices, 9090) == ["10.0.0.2:9090"]  # a number is the endpoints' own port


@pytest.mark.parametrize(
    ("conditions", "ready", "fallback"),
    [
        ({}, True, False),  # absent conditions mean ready and serving
        ({"ready": True}, True, False),
        ({"ready": False}, False, False),
        ({"ready": False, "serving": True, "terminating": True}, False, True),
        ({"ready": False, "serving": False, "terminating": True}, False, False),
        ({"ready": False, "terminating": True}, False, True),  # serving absent = true
    ],
)
def test_conditions(conditions: dict[str, bool], ready: bool, fallback: bool) -> None:
    slices = [_slice([_ep("10.0.0.1", **conditions)])]
    assert _keys(slices) == (["10.0.0.1:8080"] if ready else [])
    assert _keys(slices, serve_terminating=True) == (["10.0.0.1:8080"] if ready or fallback else [])


def test_terminating_endpoints_serve_only_when_none_is_ready() -> None:
    slices = [
        _slice([_ep("10.0.0.1"), _ep("10.0.0.2", ready=False, serving=True, terminating=True)])
    ]
    assert _keys(slices, serve_terminating=True) == ["10.0.0.1:8080"]


def test_zone_and_node_become_labels() -> None:
    ep = {"addresses": ["10.0.0.1"], "zone": "eu-1a", "nodeName": "n1"}
    (endpoint,) = endpoints_from_slices([_slice([ep])], "http")
    assert endpoint.address == Address("10.0.0.1", 8080)
    assert endpoint.labels == (("node", "n1"), ("zone", "eu-1a"))


def test_fqdn_slices_udp_ports_and_junk_are_skipped() -> None:
    slices: list[dict[str, Any]] = [
        _slice([_ep("db.example.test")], address_type="FQDN"),
        _slice([_ep("10.0.0.1")], [{"name": "http", "port": 8080, "protocol": "UDP"}]),
        _slice(["junk", {"addresses": [None, "10.0.0.2"]}]),  # type: ignore[list-item]
        {"addressType": "IPv6", "ports": [{"name": "http", "port": 80}], "endpoints": None},
    ]
    assert _keys(slices) == ["10.0.0.2:8080"]


def test_the_same_address_in_two_slices_is_one_endpoint() -> None:
    slices = [_slice([_ep("10.0.0.1")]), _slice([_ep("10.0.0.1")])]
    assert _keys(slices) == ["10.0.0.1:8080"]


def test_ipv6_endpoints() -> None:
    slices = [_slice([_ep("fd00::1")], address_type="IPv6")]
    assert _keys(slices) == ["[fd00::1]:8080"]


def test_slice_port_unnamed_port_matches_the_empty_name_only_by_number() -> None:
    s = {"ports": [{"port": 8080}]}
    assert slice_port(s, 8080) == 8080
    assert slice_port(s, "http") is None

"""Tests for `match.grpc_methods` in the edge config: parsed forms and errors naming key and fix."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kedge.core.errors import ConfigError
from kedge.edge.config import EdgeConfig, ProxyMode, RouteMatch
from kedge.edge.config_parser import parse_edge_config
from kedge.edge.routing.table import RouteRequest, RouteTable

README = Path(__file__).resolve().parents[2] / "configs" / "README.md"

BASE: dict[str, Any] = {
    "listeners": [{"name": "http", "address": "127.0.0.1:8080"}],
    "backends": [{"name": "grpc", "resolver": {"static": {"endpoints": ["127.0.0.1:9000"]}}}],
    "routes": [],
}


def _routes(*matches: object) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["routes"] = [{"backend": "grpc", "match": m} for m in matches]
    return data


def _parse(data: object) -> EdgeConfig:
    return parse_edge_config(data, "edge.yaml")


GOOD = [
    ({"grpc_methods": ["kedge.e2e.Greeter/SayHello"]}, ("kedge.e2e.Greeter/SayHello",)),
    ({"grpc_methods": "kedge.e2e.Greeter/*"}, ("kedge.e2e.Greeter/*",)),  # one string
    (
        {"grpc_methods": ["kedge.e2e.Greeter", "kedge.*", "*"]},
        ("kedge.e2e.Greeter", "kedge.*", "*"),
    ),
    ({"grpc_methods": "*"}, ("*",)),
    ({"grpc_methods": None}, ()),  # `grpc_methods:` with no value: absent
    ({}, ()),
]


@pytest.mark.parametrize(("match", "expected"), GOOD)
def test_grpc_methods_parse(match: dict[str, Any], expected: tuple[str, ...]) -> None:
    config = _parse(_routes(match))
    assert config.routes[0].match.grpc_methods == expected


def test_grpc_methods_keep_the_other_conditions() -> None:
    match = {
        "host": "grpc.example.test",
        "port": 8443,
        "headers": {"x-canary": "1"},
        "grpc_methods": ["kedge.e2e.Greeter/SayHello"],
    }
    parsed = _parse(_routes(match)).routes[0].match
    assert parsed.host == "grpc.example.test"
    assert parsed.port == 8443
    assert [h.name for h in parsed.headers] == ["x-canary"]
    assert parsed.grpc_methods == ("kedge.e2e.Greeter/SayHello",)
    assert RouteMatch().grpc_methods == ()


BAD = [
    (
        "star inside a service",
        {"grpc_methods": ["kedge.e2e.Greeter", "kedge.*/SayHello"]},
        "routes[0].match.grpc_methods[1]",
        "'*' is only allowed",
        "'pkg.Service/*'",
    ),
    (
        "star inside a method",
        {"grpc_methods": ["kedge.e2e.Greeter/Say*"]},
        "routes[0].match.grpc_methods[0]",
        "'*' must be the whole method name",
        "'pkg.Service/Method'",
    ),
    (
        "star before a package",
        {"grpc_methods": "*.Greeter"},
        "routes[0].match.grpc_methods",
        "'*' is only allowed",
        "'pkg.*'",
    ),
    (
        "leading slash",
        {"grpc_methods": ["/kedge.e2e.Greeter/SayHello"]},
        "routes[0].match.grpc_methods[0]",
        "starts with '/'",
        "'kedge.e2e.Greeter/SayHello'",
    ),
    (
        "not an identifier",
        {"grpc_methods": ["kedge-e2e.Greeter"]},
        "routes[0].match.grpc_methods[0]",
        "'kedge-e2e.Greeter' is not a service name",
        "'pkg.Service/Method'",
    ),
    (
        "empty method",
        {"grpc_methods": ["kedge.e2e.Greeter/"]},
        "routes[0].match.grpc_methods[0]",
        "'' is not a method name",
        "'pkg.Service/*'",
    ),
    (
        "empty package",
        {"grpc_methods": [".*"]},
        "routes[0].match.grpc_methods[0]",
        "'' is not a package name",
        "'pkg.*'",
    ),
    (
        "empty list",
        {"grpc_methods": []},
        "routes[0].match.grpc_methods",
        "the list is empty",
        "add at least one entry",
    ),
    (
        "empty string",
        {"grpc_methods": [""]},
        "routes[0].match.grpc_methods[0]",
        "must not be empty",
        "write a value",
    ),
    (
        "not a string",
        {"grpc_methods": [7]},
        "routes[0].match.grpc_methods[0]",
        "expected a string",
        "quote it",
    ),
    (
        "a mapping",
        {"grpc_methods": {"service": "kedge.e2e.Greeter"}},
        "routes[0].match.grpc_methods",
        "expected a list",
        "YAML list",
    ),
    (
        "key typo",
        {"grpc_method": ["kedge.e2e.Greeter"]},
        "routes[0].match.grpc_method",
        "unknown key 'grpc_method'",
        "did you mean 'grpc_methods'",
    ),
]


@pytest.mark.parametrize(
    ("data", "key_path", "problem", "fix"),
    [
        pytest.param(_routes(match), key, problem, fix, id=name)
        for name, match, key, problem, fix in BAD
    ],
)
def test_bad_grpc_methods_name_the_key_and_the_fix(
    data: object, key_path: str, problem: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(data)
    err = info.value
    assert (err.key_path, err.file) == (key_path, "edge.yaml")
    assert problem in err.problem
    assert fix in err.fix
    assert str(err) == f"edge.yaml: {key_path}: {err.problem} (fix: {err.fix})"


def test_error_names_the_route_index() -> None:
    data = _routes({"host": "a.test"}, {"grpc_methods": ["ok.S", "ok.T/M", "bad.*.x"]})
    with pytest.raises(ConfigError) as info:
        _parse(data)
    assert info.value.key_path == "routes[1].match.grpc_methods[2]"


def test_readme_grpc_example_parses_and_routes() -> None:
    """The example in configs/README.md's gRPC section parses and routes as it says."""
    section = README.read_text(encoding="utf-8").split("### gRPC methods", 1)[1]
    found = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert found is not None
    routes = yaml.safe_load(found.group(1))["routes"]
    backends = [
        {"name": name, "resolver": {"static": {"endpoints": ["127.0.0.1:9000"]}}}
        for name in sorted({r["backend"] for r in routes})
    ]
    config = _parse({**BASE, "backends": backends, "routes": routes})
    table = RouteTable.compile(config.routes, source=config.source)

    def route_for(path: str, grpc: bool = True, canary: bool = False) -> str | None:
        headers = [(b"x-canary", b"1")] if canary else []
        request = RouteRequest("grpc.example.test", 443, path, ProxyMode.REVERSE, headers, grpc)
        found = table.match(request)
        return found.name if found is not None else None

    assert route_for("/kedge.e2e.Greeter/SayHello", canary=True) == "greeter-canary"
    assert route_for("/kedge.e2e.Greeter/SayHello") == "greeter"
    assert route_for("/kedge.e2e.Other/Ping") == "greeter"
    assert route_for("/other.Svc/M") == "grpc-catch-all"
    assert route_for("/kedge.e2e.Greeter/SayHello", grpc=False) is None

"""Tests for kedge.core.config_loading: value parsers, the key-path walker, YAML loading."""

from __future__ import annotations

import enum
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kedge.core.config_loading import (
    InvalidValue,
    Node,
    closest,
    is_dns_name,
    load_yaml,
    parse_address,
    parse_duration,
    parse_size,
    parse_yaml_text,
)
from kedge.core.errors import ConfigError

# --- parse_duration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("2m500ms", 120.5),
        (" 10s ", 10.0),
        ("0", 0.0),
        ("7", 7.0),
        (0, 0.0),
        (5, 5.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "negative"),
        (-0.5, "negative"),
        ("-5s", "negative"),
        ("-5", "negative"),
        ("abc", "not a duration"),
        ("10x", "not a duration"),
        ("10 s", "not a duration"),
        ("s", "not a duration"),
        ("", "not a duration"),
        ("1h-30m", "not a duration"),
        (True, "boolean"),
        (None, "expected a duration"),
        ([1], "expected a duration"),
        (float("inf"), "not finite"),
        (float("nan"), "not finite"),
    ],
)
def test_parse_duration_rejects(value: object, problem: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_duration(value)
    assert problem in info.value.problem
    assert "10s" in info.value.fix  # the fix shows an accepted form


@given(st.integers(min_value=0, max_value=10**7))
def test_parse_duration_milliseconds_round_trip(ms: int) -> None:
    assert parse_duration(f"{ms}ms") == pytest.approx(ms / 1000)


# --- parse_size -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1024, 1024),
        ("4096", 4096),
        ("512B", 512),
        ("16KiB", 16 * 1024),
        ("64 KiB", 64 * 1024),
        ("1MiB", 1024**2),
        ("1GiB", 1024**3),
        ("10KB", 10_000),
        ("10MB", 10_000_000),
        ("2GB", 2_000_000_000),
    ],
)
def test_parse_size_accepts(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "problem", "fix"),
    [
        (-1, "negative", "64KiB"),
        ("-1KiB", "negative", "64KiB"),
        ("1.5MiB", "not a size", "64KiB"),
        (1.5, "whole number", "64KiB"),
        (True, "boolean", "64KiB"),
        (None, "expected a size", "64KiB"),
        ("16kib", "unknown size unit", "did you mean 'KiB'"),
        ("16XB", "unknown size unit", "KiB"),
        ("lots", "not a size", "64KiB"),
    ],
)
def test_parse_size_rejects(value: object, problem: str, fix: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_size(value)
    assert problem in info.value.problem
    assert fix in info.value.fix


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("KiB", 1024), ("MiB", 1024**2), ("KB", 1000), ("B", 1)]),
)
def test_parse_size_units_multiply(n: int, unit: tuple[str, int]) -> None:
    assert parse_size(f"{n}{unit[0]}") == n * unit[1]


# --- parse_address / is_dns_name --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("[2001:DB8::0001]:443", ("2001:db8::1", 443)),
        ("Svc.Example.TEST:80", ("svc.example.test", 80)),
        ("localhost:1", ("localhost", 1)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_address_accepts(value: str, expected: tuple[str, int]) -> None:
    assert parse_address(value) == expected


def test_parse_address_port_zero_only_when_allowed() -> None:
    assert parse_address("127.0.0.1:0", allow_port_zero=True) == ("127.0.0.1", 0)
    with pytest.raises(InvalidValue) as info:
        parse_address("127.0.0.1:0")
    assert "out of range" in info.value.problem
    assert "1 to 65535" in info.value.fix


@pytest.mark.parametrize(
    ("value", "problem", "fix"),
    [
        ("127.0.0.1", "no port", "host:port"),
        ("::1:8080", "needs brackets", '"[::1]:8080"'),
        (":8080", "no host", "127.0.0.1:8080"),
        ("127.0.0.1:65536", "out of range", "65535"),
        ("127.0.0.1:http", "not a number", "host:port"),
        ("127.0.0.1:", "not a number", "host:port"),
        ("[::1]8080", "no port", "[::1]:8080"),
        ("[zz]:80", "not an IPv6 address", "host:port"),
        ("300.1.2.3:80", "neither an IP address nor a DNS name", "host:port"),
        ("bad host:80", "neither an IP address nor a DNS name", "host:port"),
        (8080, "expected an address", "127.0.0.1:8080"),
    ],
)
def test_parse_address_rejects(value: object, problem: str, fix: str) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_address(value)
    assert problem in info.value.problem
    assert fix in info.value.fix


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("svc.example.test", True),
        ("SVC.Example.Test.", True),
        ("_http._tcp.svc.example.test", True),
        ("a-b.internal", True),
        ("a" * 63 + ".test", True),
        ("a" * 64 + ".test", False),
        ("", False),
        (".", False),
        ("a..b", False),
        ("-a.test", False),
        ("a b.test", False),
        ("*.test", False),
    ],
)
def test_is_dns_name(name: str, valid: bool) -> None:
    assert is_dns_name(name) is valid


@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.none(), st.booleans()))
def test_parsers_fail_only_with_invalid_value(value: object) -> None:
    # Whatever an operator writes, the answer is a sane value or an InvalidValue (a ConfigError
    # once Node adds the key path), never another exception.
    try:
        seconds = parse_duration(value)
        assert seconds >= 0 and math.isfinite(seconds)
    except InvalidValue as exc:
        assert exc.problem and exc.fix
    try:
        size = parse_size(value)
        assert isinstance(size, int) and size >= 0
    except InvalidValue as exc:
        assert exc.problem and exc.fix
    try:
        host, port = parse_address(value)
        assert host and 1 <= port <= 65535
    except InvalidValue as exc:
        assert exc.problem and exc.fix


# --- the walker -------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


def _root(value: object) -> Node:
    return Node(value, "edge.yaml")


def test_node_paths_name_keys_and_indexes() -> None:
    root = _root({"routes": [{}, {}, {}, {"match": {"host": "a.test"}}]})
    host = root.child("routes").item(3).child("match").child("host")
    assert host.path == "routes[3].match.host"
    assert host.value == "a.test"
    assert host.file == "edge.yaml"
    assert root.child("absent").value is None


def _error(call: object) -> ConfigError:
    assert callable(call)
    with pytest.raises(ConfigError) as info:
        call()
    return info.value


@pytest.mark.parametrize(
    ("value", "getter", "problem", "fix"),
    [
        (80, lambda n: n.as_str(), "expected a string, got a number (80)", "quote it"),
        ("", lambda n: n.as_str(), "must not be empty", "remove the key"),
        ("80", lambda n: n.as_int(), "expected a whole number", "without quotes"),
        (True, lambda n: n.as_int(), "expected a whole number, got a boolean", "without quotes"),
        (1.5, lambda n: n.as_int(), "expected a whole number", "without quotes"),
        (0, lambda n: n.as_int(minimum=1), "below the minimum 1", "at least 1"),
        (70000, lambda n: n.as_port(), "above the maximum 65535", "at most 65535"),
        ("yes please", lambda n: n.as_bool(), "expected true or false", "without quotes"),
        ("1.5", lambda n: n.as_float(), "expected a number", "without quotes"),
        ({"a": 1}, lambda n: n.as_list(), "expected a list, got a mapping", "YAML list"),
        ([], lambda n: n.as_list(allow_empty=False), "the list is empty", "at least one"),
        ([1], lambda n: n.as_mapping(), "expected a mapping, got a list", "key: value"),
        ({1: "x"}, lambda n: n.as_mapping(), "key 1 is not a string", "quote it"),
        ("gren", lambda n: n.as_enum(Color), "'gren' is not a valid choice", "'green'"),
        ("0s", lambda n: n.as_duration(allow_zero=False), "greater than zero", "10s"),
        ("10 fortnights", lambda n: n.as_duration(), "not a duration", "1h30m"),
        (0, lambda n: n.as_size(allow_zero=False), "greater than zero", "64KiB"),
        ("127.0.0.1", lambda n: n.as_address(), "has no port", "host:port"),
    ],
)
def test_getters_reject_with_path_and_fix(
    value: object, getter: object, problem: str, fix: str
) -> None:
    node = _root({"section": {"key": value}}).child("section").child("key")
    assert callable(getter)
    err = _error(lambda: getter(node))
    assert err.file == "edge.yaml"
    assert err.key_path == "section.key"
    assert problem in err.problem
    assert fix in err.fix
    assert str(err).startswith("edge.yaml: section.key: ")


def test_getters_accept() -> None:
    node = _root(
        {"s": "x", "i": 3, "b": False, "f": 2, "e": "red", "d": "1m", "z": "1KiB", "a": "[::1]:9"}
    )
    assert node.child("s").as_str() == "x"
    assert node.child("i").as_int(minimum=3, maximum=3) == 3
    assert node.child("b").as_bool() is False
    assert node.child("f").as_float() == 2.0
    assert node.child("e").as_enum(Color) is Color.RED
    assert node.child("d").as_duration() == 60.0
    assert node.child("z").as_size() == 1024
    assert node.child("a").as_address() == ("::1", 9)
    items = _root(["p", "q"]).as_list()
    assert [(n.path, n.value) for n in items] == [("[0]", "p"), ("[1]", "q")]


def test_unknown_key_names_it_and_suggests_the_closest() -> None:
    node = _root({"routes": [{"backend": "x", "mtach": {}}]}).child("routes").item(0)
    err = _error(lambda: node.as_mapping(("name", "backend", "match")))
    assert err.key_path == "routes[0].mtach"
    assert err.problem == "unknown key 'mtach'"
    assert "did you mean 'match'?" in err.fix
    assert "backend, match, name" in err.fix


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    err = _error(lambda: _root({"zzz": 1}).as_mapping(("listeners", "routes")))
    assert err.key_path == "zzz"
    assert "did you mean" not in err.fix
    assert "listeners, routes" in err.fix


def test_fields_null_is_absent_and_require_names_the_missing_key() -> None:
    f = _root({"a": None, "b": 0}).as_mapping()
    assert f.get("a") is None
    assert f.is_null("a") and not f.is_null("b") and not f.is_null("c")
    assert "b" in f and "a" not in f
    assert f.get_int("b", 7) == 0  # present zero is not "absent"
    assert f.get_int("a", 7) == 7
    assert f.get_str("c", "dflt") == "dflt"
    nested = _root({"backends": [{"name": "x"}]}).child("backends").item(0).as_mapping()
    err = _error(lambda: nested.require("resolver", "add a resolver"))
    assert err.key_path == "backends[0].resolver"
    assert err.problem == "missing required key 'resolver'"
    assert err.fix == "add a resolver"


def test_error_at_the_root_says_top_level() -> None:
    err = _root(["x"]).error("bad", "fix it")
    assert err.key_path == "(top level)"


def test_closest() -> None:
    assert closest("roundrobin", ["round_robin", "p2c"]) == ["round_robin"]
    assert closest("zzz", ["round_robin", "p2c"]) == []


# --- YAML loading -----------------------------------------------------------------------


def test_parse_yaml_text_returns_a_root_node() -> None:
    node = parse_yaml_text("a: [1, 2]\nb: {c: 10s}\n", "x.yaml")
    assert node == Node({"a": [1, 2], "b": {"c": "10s"}}, "x.yaml", "")


def test_yaml_syntax_error_names_file_and_line() -> None:
    err = _error(lambda: parse_yaml_text("listeners:\n  - name: a\n    address: [\n", "x.yaml"))
    assert err.file == "x.yaml"
    assert err.key_path.startswith("line 4, column")
    assert "YAML syntax error" in err.problem
    assert err.fix


def test_yaml_bad_indentation_names_the_line() -> None:
    err = _error(lambda: parse_yaml_text("a: 1\n b: 2\n", "x.yaml"))
    assert err.key_path.startswith("line 2,")


def test_duplicate_keys_are_an_error_with_their_line() -> None:
    err = _error(lambda: parse_yaml_text("routes: []\nadmin: {}\nroutes: []\n", "x.yaml"))
    assert err.key_path == "line 3, column 1"
    assert "duplicate key 'routes'" in err.problem


def test_merge_keys_may_override() -> None:
    node = parse_yaml_text("base: &b {x: 1, y: 2}\nuse: {<<: *b, x: 3}\n", "x.yaml")
    assert node.child("use").value == {"x": 3, "y": 2}


def test_multiple_documents_are_an_error() -> None:
    err = _error(lambda: parse_yaml_text("a: 1\n---\nb: 2\n", "x.yaml"))
    assert "single document" in err.problem


def test_load_yaml_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("access_log: false\n", encoding="utf-8")
    node = load_yaml(str(path))
    assert node.value == {"access_log": False}
    assert node.file == str(path)


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    err = _error(lambda: load_yaml(path))
    assert err.file == path
    assert "cannot read the file" in err.problem
    assert "check the path" in err.fix


def test_load_yaml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    err = _error(lambda: load_yaml(str(path)))
    assert "not UTF-8" in err.problem

"""Tests for kedge.dialer.pac: the rendered PAC file, run by node, agrees with the mapper."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kedge.dialer.config import DialerConfig, MapRoute, RegexpRule, SuffixRule
from kedge.dialer.config_parser import parse_dialer_config_text
from kedge.dialer.mapping import Mapper
from kedge.dialer.pac import js_regexp_source, render_pac

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

PROXY = "PROXY 127.0.0.1:8070; DIRECT"

# Runs the PAC in a fresh V8 context holding only the functions a PAC engine provides
# (those a PAC file may call), then answers FindProxyForURL for every [url, host] case.
HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const pac = fs.readFileSync(process.argv[1], "utf8");
const cases = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const sandbox = {
  dnsDomainIs: (h, d) => h.length >= d.length && h.substring(h.length - d.length) === d,
  shExpMatch: (s, p) => new RegExp("^" + p.replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*").replace(/\?/g, ".") + "$").test(s),
  isPlainHostName: (h) => h.indexOf(".") < 0,
  dnsResolve: () => { throw new Error("the PAC must not resolve names"); },
  myIpAddress: () => "127.0.0.1",
};
vm.createContext(sandbox);
vm.runInContext(pac, sandbox, {filename: "proxy.pac", timeout: 5000});
const out = cases.map(([url, host]) => sandbox.FindProxyForURL(url, host));
process.stdout.write(JSON.stringify(out));
"""


def run_pac(pac: str, cases: list[tuple[str, str]], tmp_path: Path) -> list[str]:
    assert NODE is not None
    pac_file, cases_file = tmp_path / "proxy.pac", tmp_path / "cases.json"
    pac_file.write_text(pac, encoding="utf-8")
    cases_file.write_text(json.dumps(cases), encoding="utf-8")
    proc = subprocess.run(
        [NODE, "-e", HARNESS, str(pac_file), str(cases_file)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    result: list[str] = json.loads(proc.stdout)
    return result


CONFIG = r"""
routes:
  - name: "quote\" backslash\\ </script> \u2028 line\u2029 end'); alert(1); //"
    suffix: "*.cluster-a.internal"
    ports: [80, 443]
    edge: https://edge.cluster-a.test:8443
  - name: grpc-only
    suffix: "*.grpc.internal"
    edge: https://edge.grpc.test
    protocol: grpc
  - name: kube-b
    direct: kubernetes.cluster-b.internal:443
    edge: https://edge.cluster-b.test:8443
  - direct: anyport.internal
    edge: http://127.0.0.1:9000
  - name: regexp
    regexp: '(?P<svc>[a-z0-9-]+)\.(?P<cluster>[a-z0-9-]+)\.mesh:(?P<port>[0-9]+)'
    edge: https://edge.${cluster}.test:8443
  - name: "quotes and backslashes in the pattern"
    regexp: '(?P<q>[a-z]+)[''"\\]?\.quoted\.test:443'
    edge: https://edge.${q}.test
  - name: only some ports
    regexp: '(?P<s>api|web)\.ports\.test:(?:80|8080|8[0-9]{3})'
    edge: https://edge.ports.test
  - name: anything on port 81, so that only the host checks keep addresses out
    regexp: '[a-z0-9.:\[\]_-]+:81'
    edge: https://edge.catchall.test
"""

TABLE = [
    # suffix with ports: http (80) and https (443) only
    ("http://a.cluster-a.internal/x", "a.cluster-a.internal", PROXY),
    ("https://a.b.cluster-a.internal/", "a.b.cluster-a.internal", PROXY),
    ("http://a.cluster-a.internal:8080/", "a.cluster-a.internal", "DIRECT"),
    ("http://cluster-a.internal/", "cluster-a.internal", "DIRECT"),  # the bare suffix
    ("http://xcluster-a.internal/", "xcluster-a.internal", "DIRECT"),
    ("http://A.Cluster-A.Internal./", "A.Cluster-A.Internal.", PROXY),
    ("ws://a.cluster-a.internal/socket", "a.cluster-a.internal", PROXY),
    ("wss://a.cluster-a.internal/socket", "a.cluster-a.internal", PROXY),
    ("ftp://a.cluster-a.internal/", "a.cluster-a.internal", "DIRECT"),
    ("http://user:pw@a.cluster-a.internal/", "a.cluster-a.internal", PROXY),
    ("http://user:pw@a.cluster-a.internal:8080/", "a.cluster-a.internal", "DIRECT"),
    # gRPC-only routes are not for browsers
    ("https://svc.grpc.internal/", "svc.grpc.internal", "DIRECT"),
    # direct with and without a port
    ("https://kubernetes.cluster-b.internal/api", "kubernetes.cluster-b.internal", PROXY),
    ("https://kubernetes.cluster-b.internal:6443/", "kubernetes.cluster-b.internal", "DIRECT"),
    ("http://anyport.internal:1/", "anyport.internal", PROXY),
    ("http://anyport.internal:65535/", "anyport.internal", PROXY),
    ("http://anyport.internal:0/", "anyport.internal", "DIRECT"),
    ("http://anyport.internal:65536/", "anyport.internal", "DIRECT"),
    # regexp: host + ":" + port, whole match
    ("http://svc.zone-1.mesh:8080/", "svc.zone-1.mesh", PROXY),
    ("https://svc.zone-1.mesh/", "svc.zone-1.mesh", PROXY),
    ("https://a.svc.zone-1.mesh/", "a.svc.zone-1.mesh", "DIRECT"),
    ("https://svc.zone_1.mesh/", "svc.zone_1.mesh", "DIRECT"),
    ("https://abc.quoted.test/", "abc.quoted.test", PROXY),
    ("https://abc.quoted.test:444/", "abc.quoted.test", "DIRECT"),
    ("http://api.ports.test/", "api.ports.test", PROXY),
    ("http://web.ports.test:8443/", "web.ports.test", PROXY),
    ("http://web.ports.test:9000/", "web.ports.test", "DIRECT"),
    ("http://db.ports.test/", "db.ports.test", "DIRECT"),
    # never proxied
    ("http://10.0.0.1/", "10.0.0.1", "DIRECT"),
    ("http://[::1]/", "::1", "DIRECT"),
    ("http://[::1]/", "[::1]", "DIRECT"),
    ("http://127.1/", "127.1", "DIRECT"),
    ("http://example.com/", "example.com", "DIRECT"),
    ("http://localhost:8070/proxy.pac", "localhost", "DIRECT"),
    ("not a url", "a.cluster-a.internal", "DIRECT"),
    ("http://\u212aube.cluster-a.internal/", "\u212aube.cluster-a.internal", "DIRECT"),
    ("http://ok.test:81/", "ok.test", PROXY),
    ("http://ok.test.:81/", "ok.test.", PROXY),
    ("http://ok..test:81/", "ok..test", "DIRECT"),
    ("http://10.0.0.1:81/", "10.0.0.1", "DIRECT"),
    ("http://127.1:81/", "127.1", "DIRECT"),
    ("http://a.b.1:81/", "a.b.1", "DIRECT"),
    ("http://[::1]:81/", "::1", "DIRECT"),
    ("http://[::1]:81/", "[::1]", "DIRECT"),
    ("http://-a.test:81/", "-a.test", "DIRECT"),
    ("http://a_.test:81/", "a_.test", PROXY),
    ("http://" + "x" * 64 + ".test:81/", "x" * 64 + ".test", "DIRECT"),
    ("http://" + "x." * 127 + "t:81/", "x." * 127 + "t", "DIRECT"),  # 255 characters
]


@pytest.fixture(scope="module")
def config() -> DialerConfig:
    return parse_dialer_config_text(CONFIG)


def test_pac_answers_like_the_mapper(config: DialerConfig, tmp_path: Path) -> None:
    answers = run_pac(render_pac(config, "127.0.0.1:8070"), [(u, h) for u, h, _ in TABLE], tmp_path)
    assert answers == [want for _, _, want in TABLE]
    # and the table itself agrees with Mapper.map for plain HTTP requests
    mapper = Mapper(config)
    for url, host, want in TABLE:
        m = re.match(r"(\w+)://(?:[^/@]*@)?(\[[^\]]*\]|[^/:]*)(?::(\d+))?", url)
        if m is None or m.group(1) not in ("http", "https", "ws", "wss"):
            continue
        port = int(m.group(3)) if m.group(3) else (443 if m.group(1) in ("https", "wss") else 80)
        assert (mapper.map(host, port) is not None) == (want == PROXY), url


def test_hostile_strings_are_data_not_code(config: DialerConfig) -> None:
    pac = render_pac(config, "127.0.0.1:8070")
    data = pac[pac.index("var KEDGE_RULES") : pac.index("];")]
    assert "</script>" not in pac and "<" not in data and ">" not in data
    assert "\u2028" not in pac and "\u2029" not in pac
    assert "alert(1)" in pac  # still there, but only inside a JSON string literal
    names = re.findall(r'^  \["\w+", ("(?:[^"\\]|\\.)*")', pac, re.MULTILINE)
    assert json.loads(names[0]) == config.routes[0].name
    assert pac.isascii()


def test_render_is_deterministic(config: DialerConfig) -> None:
    assert render_pac(config, "127.0.0.1:8070") == render_pac(
        parse_dialer_config_text(CONFIG), "127.0.0.1:8070"
    )
    assert render_pac(config, "[::1]:8070") != render_pac(config, "127.0.0.1:8070")


def test_no_routes_is_all_direct(tmp_path: Path) -> None:
    pac = render_pac(DialerConfig("<t>", (), {}), "127.0.0.1:1")
    assert run_pac(pac, [("http://a.internal/", "a.internal")], tmp_path) == ["DIRECT"]


@pytest.mark.parametrize(
    "proxy", ["127.0.0.1", "127.0.0.1:80; DIRECT", 'x";alert(1);"', "a b:1", "::1:80", ""]
)
def test_refuses_a_bad_proxy_address(config: DialerConfig, proxy: str) -> None:
    with pytest.raises(ValueError, match="proxy address"):
        render_pac(config, proxy)


def test_the_proxy_address_is_used(config: DialerConfig, tmp_path: Path) -> None:
    pac = render_pac(config, "[::1]:8071")
    case = ("http://a.cluster-a.internal/", "a.cluster-a.internal")
    assert run_pac(pac, [case], tmp_path) == ["PROXY [::1]:8071; DIRECT"]


# --- Python pattern -> JavaScript RegExp source ----------------------------------------


@pytest.mark.parametrize(
    ("pattern", "js"),
    [
        (r"(?P<a>x)", r"(?<a>x)"),
        (r"(?P<a>[a-z]+)\.(?P<b>\d+):(?:80|443)", r"(?<a>[a-z]+)\.(?<b>\d+):(?:80|443)"),
        (r"[(?P<a>]", r"[(?P<a>]"),  # inside a class nothing is a group
        (r"\(?P<a>", r"\(?P<a>"),  # an escaped paren
        (r"a*?b+?c??d{2,3}?", r"a*?b+?c??d{2,3}?"),  # lazy quantifiers
        (r"(?=a)(?!b)(?<=c)(?<!d)", r"(?=a)(?!b)(?<=c)(?<!d)"),
        (r"[^\]]\-\.\\", r"[^\]]\-\.\\"),
        (r"x{2}", r"x{2}"),
        (r"\x41\u0041\d\w\s\b\B", r"\x41\u0041\d\w\s\b\B"),
    ],
)
def test_js_regexp_source(pattern: str, js: str) -> None:
    assert js_regexp_source(pattern) == js


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"(?P<a>x)(?P=a)", "named backreferences"),
        (r"a(?#comment)", "comments"),
        (r"(?i)a", "inline flags"),
        (r"(?i:a)", "inline flags"),
        (r"(?s-i:a)", "inline flags"),
        (r"(?>a)", "atomic"),
        (r"(a)?(?(1)b|c)", "conditional"),
        (r"a*+", "possessive"),
        (r"a++", "possessive"),
        (r"a?+", "possessive"),
        (r"a{2}+", "possessive"),
        (r"a{,3}", "{,n}"),
        (r"\Aa", r"\A"),
        (r"a\Z", r"\Z"),
        (r"\a", r"\a"),
        (r"\N{DIGIT ONE}", r"\N"),
        (r"\U00000041", r"\U"),
        ("a\\", "lone backslash"),
        (r"[]a]", "first in a character class"),
        (r"[^]a]", "first in a character class"),
        (r"[a", "unterminated"),
        (r"(?<n>a)", "unsupported group"),
    ],
)
def test_js_regexp_source_refuses(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        js_regexp_source(pattern)


# --- property: the PAC and the mapper agree on arbitrary hosts -------------------------

PROPERTY_ROUTES = (
    MapRoute("s", SuffixRule(".b.test", (80, 8080)), "https://e.test"),
    MapRoute(
        "r",
        RegexpRule(re.compile(r"(?P<x>[a-z0-9._-]*)\.(?P<y>[a-c]+)\.test:(?P<p>[0-9]+)")),
        "https://${x}.edge.test:${p}",
    ),
    MapRoute("c", RegexpRule(re.compile(r"c[a-z0-9._:\[\]-]*:[0-9]+")), "https://c.test"),
)
_HOST = st.one_of(
    st.text(alphabet="abc.-_09:[]\u212a", max_size=16),
    st.lists(
        st.sampled_from(["a", "b", "c", "test", "0", "1-2", "_x", "b-", "c" * 63]), max_size=5
    ).map(".".join),
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cases=st.lists(st.tuples(_HOST, st.integers(0, 70000)), min_size=1, max_size=40))
def test_pac_agrees_with_the_mapper_on_any_host(
    cases: list[tuple[str, int]], tmp_path: Path
) -> None:
    config = DialerConfig("<t>", PROPERTY_ROUTES, {})
    mapper = Mapper(config)
    urls = [(f"http://{host}:{port}/", host) for host, port in cases]
    answers = run_pac(render_pac(config, "127.0.0.1:1"), urls, tmp_path)
    expected = [
        "PROXY 127.0.0.1:1; DIRECT" if mapper.map(h, p) is not None else "DIRECT" for h, p in cases
    ]
    assert answers == expected

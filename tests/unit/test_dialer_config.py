"""Tests for kedge.dialer.config_parser: YAML -> DialerConfig, and errors naming key and fix."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import trustme
import yaml

from kedge.core.config_loading import Node
from kedge.core.errors import ConfigError
from kedge.dialer.config import (
    ClientCredentialsSourceConfig,
    DialerConfig,
    DirectRule,
    EdgeTls,
    KubeconfigSourceConfig,
    MapRoute,
    OidcSourceConfig,
    RegexpRule,
    RouteProtocol,
    StaticTokenSourceConfig,
    SuffixRule,
    TokenFileSourceConfig,
    TokenKind,
    Unmapped,
)
from kedge.dialer.config_parser import (
    load_dialer_config,
    parse_dialer_config,
    parse_dialer_config_text,
)
from kedge.dialer.mapping import Mapper

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def write_certs(directory: Path) -> None:
    """The files configs/make-example-certs.sh makes that winch.yaml names, from trustme."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "backend-ca.pem"))
    client = ca.issue_cert("kedge-client")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client-key.pem"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A directory with certs/ and secrets/ to anchor relative paths."""
    write_certs(tmp_path / "certs")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("t0ken\n")
    (tmp_path / "secrets" / "ci-client-secret").write_text("s3cret\n")
    return tmp_path


def parse(text: str, base: Path | None = None) -> DialerConfig:
    return parse_dialer_config_text(
        text, "dialer.yaml", base_dir=None if base is None else str(base)
    )


# --- the shipped example ---------------------------------------------------------------


def test_example_config_uses_every_key(home: Path) -> None:
    shutil.copy(CONFIGS / "winch.yaml", home / "winch.yaml")
    config = load_dialer_config(str(home / "winch.yaml"))
    certs, secrets = home / "certs", home / "secrets"
    edge_tls = EdgeTls(
        str(certs / "backend-ca.pem"), str(certs / "client.pem"), str(certs / "client-key.pem")
    )
    assert config == DialerConfig(
        source=str(home / "winch.yaml"),
        edge_tls=edge_tls,
        unmapped=Unmapped.REFUSE,
        refresh_margin=60.0,
        routes=(
            MapRoute(
                "kube-b",
                DirectRule("kubernetes.cluster-b.internal", 443),
                "https://edge.cluster-b.test:8443",
                proxy_auth="me",
                backend_auth="kube-b",
                protocol=RouteProtocol.ANY,
                tls=EdgeTls(
                    edge_tls.ca_file, edge_tls.cert_file, edge_tls.key_file, "edge.cluster-b.test"
                ),
            ),
            MapRoute(
                "cluster-a",
                SuffixRule(".cluster-a.internal", (80, 443, 8080)),
                "https://edge.cluster-a.test:8443",
                proxy_auth="ci",
                protocol=RouteProtocol.GRPC,
            ),
            MapRoute(
                "by-cluster",
                RegexpRule(
                    re.compile(
                        r"(?P<svc>[a-z0-9-]+)\.(?P<cluster>[a-z0-9-]+)\.internal:(?P<port>[0-9]+)"
                    )
                ),
                "https://edge.${cluster}.test:8443",
                backend_auth="svc-token",
            ),
            MapRoute("local-dev", SuffixRule(".dev.test"), "http://127.0.0.1:8080"),
        ),
        auth_sources={
            "me": OidcSourceConfig(
                "me",
                "https://login.example.test",
                "kedge-cli",
                scopes=("openid", "offline_access"),
                use=TokenKind.ID_TOKEN,
                login=True,
                login_timeout=120.0,
            ),
            "kube-b": KubeconfigSourceConfig(
                "kube-b", "alice", str(Path("~/.kube/config").expanduser())
            ),
            "ci": ClientCredentialsSourceConfig(
                "ci", "https://login.example.test", "ci-bot", str(secrets / "ci-client-secret")
            ),
            "svc-token": TokenFileSourceConfig("svc-token", str(secrets / "token")),
            "fixed": StaticTokenSourceConfig("fixed", "example-not-a-secret"),
        },
    )
    mapped = Mapper(config).map("api.cluster-c.internal", 6443)
    assert mapped is not None and mapped.edge.key == "https://edge.cluster-c.test:8443"


def test_readme_documents_every_key() -> None:
    readme = (CONFIGS / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Winch and dialer configuration") :]
    example = yaml.safe_load((CONFIGS / "winch.yaml").read_text(encoding="utf-8"))
    keys: set[str] = set()

    def collect(value: object, *, names: bool = False) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if not names:  # auth source names are the user's, not keys
                    keys.add(key)
                collect(item, names=key == "auth_sources")
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(example)
    keys.add("secret_file")  # commented out in the example: it needs a 0600 file
    assert len(keys) > 35
    for key in sorted(keys):
        assert f"`{key}`" in section, key


# --- defaults and basics ---------------------------------------------------------------


def test_minimal_config_has_the_dataclass_defaults() -> None:
    config = parse("routes: []")
    assert config == DialerConfig("dialer.yaml", (), {})
    assert Mapper(config).map("a.internal", 443) is None


def test_a_winch_only_file_is_accepted() -> None:
    config = parse("winch: {listen: 127.0.0.1:0, whatever: [1, 2]}")
    assert config.routes == () and config.auth_sources == {}


def test_parse_dialer_config_takes_a_node() -> None:
    node = Node({"unmapped": "direct", "refresh_margin": "2m"}, "x.yaml")
    config = parse_dialer_config(node)
    assert (config.unmapped, config.refresh_margin, config.source) == (
        Unmapped.DIRECT,
        120.0,
        "x.yaml",
    )


def test_route_names_default_to_their_index() -> None:
    config = parse(
        """
routes:
  - direct: a.test
    edge: https://e.test
  - name: named
    direct: b.test.
    edge: https://e.test
  - suffix: "*.C.Test."
    edge: https://e.test
"""
    )
    assert [r.name for r in config.routes] == ["routes[0]", "named", "routes[2]"]
    assert config.routes[1].rule == DirectRule("b.test")
    assert config.routes[2].rule == SuffixRule(".c.test")


def test_route_tls_overrides_key_by_key(home: Path) -> None:
    config = parse(
        """
edge_tls: {ca_file: certs/backend-ca.pem, server_name: top.test}
routes:
  - direct: a.test
    edge: https://e.test
    tls: {cert_file: certs/client.pem, key_file: certs/client-key.pem}
  - direct: b.test
    edge: https://e.test
""",
        home,
    )
    ca = str(home / "certs" / "backend-ca.pem")
    assert config.edge_tls == EdgeTls(ca, server_name="top.test")
    assert config.routes[0].tls == EdgeTls(
        ca, str(home / "certs" / "client.pem"), str(home / "certs" / "client-key.pem"), "top.test"
    )
    assert config.routes[1].tls is None


def test_tilde_is_expanded(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(home))
    config = parse("auth_sources: {t: {token_file: {path: ~/secrets/token}}}")
    assert config.auth_sources["t"] == TokenFileSourceConfig("t", str(home / "secrets" / "token"))


def test_oidc_access_token_needs_no_openid(home: Path) -> None:
    config = parse(
        """
auth_sources:
  a:
    oidc:
      issuer: http://127.0.0.1:9999
      client_id: c
      client_secret_file: secrets/ci-client-secret
      scopes: [api, api]
      use: access_token
      resource: https://api.test
      cache_dir: cache
      login: false
      login_timeout: 30s
""",
        home,
    )
    assert config.auth_sources["a"] == OidcSourceConfig(
        "a",
        "http://127.0.0.1:9999",
        "c",
        str(home / "secrets" / "ci-client-secret"),
        ("api",),
        TokenKind.ACCESS_TOKEN,
        "https://api.test",
        str(home / "cache"),
        False,
        30.0,
    )


# --- errors ----------------------------------------------------------------------------

E = "edge: https://e.test"

ERRORS = [
    # (yaml, key path, problem, fix)
    ("", "(top level)", "the config is empty", "configs/winch.yaml"),
    ("rutes: []", "rutes", "unknown key 'rutes'", "did you mean 'routes'?"),
    ("unmapped: drop", "unmapped", "not a valid choice", "refuse, direct"),
    ("refresh_margin: soon", "refresh_margin", "not a duration", "duration"),
    ("routes: {}", "routes", "expected a list", "YAML list"),
    (f"routes: [{{{E}}}]", "routes[0]", "has no match rule", "exactly one of"),
    (
        f"routes: [{{direct: a.test, suffix: '*.b.test', {E}}}]",
        "routes[0]",
        "has direct and suffix",
        "exactly one of",
    ),
    ("routes: [{direct: a.test}]", "routes[0].edge", "missing required key", "edge:"),
    (f"routes: [{{direct: a.test, {E}, prot: http}}]", "routes[0].prot", "unknown key", "protocol"),
    (
        f"routes: [{{direct: a.test, {E}, protocol: grcp}}]",
        "routes[0].protocol",
        "not a valid choice",
        "did you mean 'grpc'?",
    ),
    (
        f"routes: [{{name: x, direct: a.test, {E}}}, {{name: x, direct: b.test, {E}}}]",
        "routes[1].name",
        "duplicate route name 'x' (also routes[0].name)",
        "unique",
    ),
    (
        f'routes: [{{name: "a\\nb", direct: a.test, {E}}}]',
        "routes[0].name",
        "control characters",
        "letters",
    ),
    # direct
    (f"routes: [{{direct: 10.0.0.1, {E}}}]", "routes[0].direct", "IP address", "DNS name"),
    (f"routes: [{{direct: '[::1]:443', {E}}}]", "routes[0].direct", "IP address", "DNS name"),
    (f"routes: [{{direct: '127.1', {E}}}]", "routes[0].direct", "IP address", "DNS name"),
    (f"routes: [{{direct: 'a b.test', {E}}}]", "routes[0].direct", "not a valid DNS", "e.g."),
    (f"routes: [{{direct: 'a.test:0', {E}}}]", "routes[0].direct", "out of range", "1 to 65535"),
    (f"routes: [{{direct: 'a.test:x', {E}}}]", "routes[0].direct", "not a number", "host:port"),
    (
        f"routes: [{{direct: a.test, ports: [80], {E}}}]",
        "routes[0].ports",
        "`ports` is for suffix routes",
        "direct `host:443`",
    ),
    # suffix
    (f"routes: [{{suffix: b.test, {E}}}]", "routes[0].suffix", "not a suffix pattern", "*."),
    (f"routes: [{{suffix: '*b.test', {E}}}]", "routes[0].suffix", "not a suffix pattern", "*."),
    (f"routes: [{{suffix: '*.', {E}}}]", "routes[0].suffix", "not a suffix pattern", "*."),
    (f"routes: [{{suffix: '*.a..b', {E}}}]", "routes[0].suffix", "not a suffix pattern", "*."),
    (f"routes: [{{suffix: '*.10.0.0.1', {E}}}]", "routes[0].suffix", "ends in a number", "*."),
    (
        f"routes: [{{suffix: '*.b.test', ports: [80, 80], {E}}}]",
        "routes[0].ports[1]",
        "listed twice",
        "once",
    ),
    (
        f"routes: [{{suffix: '*.b.test', ports: [0], {E}}}]",
        "routes[0].ports[0]",
        "below the minimum",
        "at least 1",
    ),
    # regexp
    (f"routes: [{{regexp: '(a', {E}}}]", "routes[0].regexp", "does not compile", "correct"),
    (
        f"routes: [{{regexp: '(?i)a', {E}}}]",
        "routes[0].regexp",
        "inline flags",
        "named groups as (?P<name>...)",
    ),
    (f"routes: [{{regexp: '(?P<a>x)(?P=a)', {E}}}]", "routes[0].regexp", "(?P=name)", "(?P<"),
    (f"routes: [{{regexp: '\\Aa.test:443', {E}}}]", "routes[0].regexp", "\\A", "plain groups"),
    (
        "routes: [{regexp: '(?P<c>[a-z]+):443', edge: 'https://e.${cluster}.test'}]",
        "routes[0].edge",
        "${cluster} is not a named group of the regexp (its groups: c)",
        "(?P<cluster>",
    ),
    (
        "routes: [{direct: a.test, edge: 'https://e.${c}.test'}]",
        "routes[0].edge",
        "only filled in by regexp routes",
        "named groups",
    ),
    # edge URL
    ("routes: [{direct: a.test, edge: e.test}]", "routes[0].edge", "not an https://", "https://"),
    (
        "routes: [{direct: a.test, edge: 'https://e.test/x'}]",
        "routes[0].edge",
        "a path",
        "optional port",
    ),
    (
        "routes: [{direct: a.test, edge: 'https://u@e.test'}]",
        "routes[0].edge",
        "user info",
        "scheme",
    ),
    (
        "routes: [{direct: a.test, edge: 'https://e.test:99999'}]",
        "routes[0].edge",
        "invalid port",
        "1-65535",
    ),
    # credentials are never sent in the clear
    (
        "routes: [{direct: a.test, edge: 'http://e.test', proxy_auth: t}]\n"
        "auth_sources: {t: {token: {value: abc}}}",
        "routes[0].edge",
        "credentials (proxy_auth) to an http:// edge",
        "https://",
    ),
    (
        "routes: [{direct: a.test, edge: 'http://e.test', backend_auth: t}]\n"
        "auth_sources: {t: {token: {value: abc}}}",
        "routes[0].edge",
        "credentials (backend_auth)",
        "https://",
    ),
    (
        "routes: [{direct: a.test, edge: 'http://e.test', tls: {server_name: x.test}}]",
        "routes[0].tls",
        "`tls` on an http:// edge",
        "remove `tls`",
    ),
    (
        f"routes: [{{direct: a.test, {E}, tls: }}]",
        "routes[0].tls",
        "has no value",
        "remove `tls`",
    ),
    # auth source references
    (
        f"routes: [{{direct: a.test, {E}, proxy_auth: mee}}]\n"
        "auth_sources: {me: {token: {value: abc}}, ci: {token: {value: abc}}}",
        "routes[0].proxy_auth",
        "no auth source called 'mee'",
        "did you mean 'me'? name one under `auth_sources` (known: ci, me)",
    ),
    (
        f"routes: [{{direct: a.test, {E}, backend_auth: x}}]",
        "routes[0].backend_auth",
        "no auth source called 'x'",
        "known: none defined",
    ),
    # auth sources
    ("auth_sources: []", "auth_sources", "expected a mapping", "key: value"),
    (
        "auth_sources: {Bad Name: {token: {value: a}}}",
        "auth_sources.Bad Name",
        "not a valid",
        "lower",
    ),
    ("auth_sources: {a: {}}", "auth_sources.a", "exactly one kind", "oidc, kubeconfig"),
    (
        "auth_sources: {a: {token: {value: x}, token_file: {path: y}}}",
        "auth_sources.a",
        "(it has token and token_file)",
        "one of",
    ),
    ("auth_sources: {a: {tokn: {value: x}}}", "auth_sources.a.tokn", "unknown key", "'token'"),
    (
        "auth_sources: {a: {token: {value: 'abc\\r\\nX-Evil: 1'}}}",
        "auth_sources.a.token.value",
        "characters a bearer token cannot hold",
        "RFC 6750",
    ),
    ("auth_sources: {a: {token: {}}}", "auth_sources.a.token.value", "missing required", "token"),
    (
        "auth_sources: {a: {token_file: {path: nope}}}",
        "auth_sources.a.token_file.path",
        "does not exist",
        "existing file",
    ),
    (
        "auth_sources: {a: {kubeconfig: {path: x}}}",
        "auth_sources.a.kubeconfig.user",
        "missing",
        "user",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'http://login.test', client_id: c}}}",
        "auth_sources.a.oidc.issuer",
        "plain http://",
        "127.0.0.1",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'login.test', client_id: c}}}",
        "auth_sources.a.oidc.issuer",
        "not an https:// URL",
        "discovery",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'https://l.test?x=1', client_id: c}}}",
        "auth_sources.a.oidc.issuer",
        "query",
        "discovery",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'https://l.test'}}}",
        "auth_sources.a.oidc.client_id",
        "missing",
        "client",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'https://l.test', client_id: c, scopes: [email]}}}",
        "auth_sources.a.oidc.scopes",
        "only issued with the `openid` scope",
        "add openid",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'https://l.test', client_id: c, scopes: ['a b']}}}",
        "auth_sources.a.oidc.scopes[0]",
        "not a scope",
        "one scope per item",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'https://l.test', client_id: c, use: id}}}",
        "auth_sources.a.oidc.use",
        "not a valid choice",
        "id_token",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'https://l.test', client_id: c, login_timeout: 0}}}",
        "auth_sources.a.oidc.login_timeout",
        "greater than zero",
        "positive",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'https://l.test', client_id: c, resource: api}}}",
        "auth_sources.a.oidc.resource",
        "not a resource indicator",
        "absolute URI",
    ),
    (
        "auth_sources: {a: {oidc: {issuer: 'https://l.test', client_id: c, "
        "client_secret_file: nope}}}",
        "auth_sources.a.oidc.client_secret_file",
        "does not exist",
        "existing file",
    ),
    (
        "auth_sources: {a: {client_credentials: {issuer: 'https://l.test', client_id: c}}}",
        "auth_sources.a.client_credentials.client_secret_file",
        "missing required",
        "client secret",
    ),
    # edge TLS
    ("edge_tls: {ca_file: nope.pem}", "edge_tls.ca_file", "does not exist", "existing file"),
    ("edge_tls: {cert_file: certs/client.pem}", "edge_tls.key_file", "go together", "both"),
    ("edge_tls: {key_file: certs/client-key.pem}", "edge_tls.cert_file", "go together", "both"),
    (
        "edge_tls: {server_name: 'a b'}",
        "edge_tls.server_name",
        "not a valid DNS",
        "edge's certificate",
    ),
    ("edge_tls: {server_name: 10.0.0.1}", "edge_tls.server_name", "not a valid DNS", "certificate"),
    ("edge_tls: {ca_file: secrets/token}", "edge_tls", "TLS files do not load", "PEM CA"),
    (
        "edge_tls: {cert_file: certs/backend-ca.pem, key_file: certs/backend-ca.pem}",
        "edge_tls",
        "TLS files do not load",
        "private key",
    ),
    ("edge_tls: {ca_fil: x}", "edge_tls.ca_fil", "unknown key", "did you mean 'ca_file'?"),
]


@pytest.mark.parametrize(("text", "key_path", "problem", "fix"), ERRORS)
def test_errors_name_file_key_and_fix(
    text: str, key_path: str, problem: str, fix: str, home: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, home)
    err = info.value
    assert err.file == "dialer.yaml"
    assert err.key_path == key_path
    assert problem in err.problem
    assert fix in err.fix


def test_relative_paths_are_read_from_the_config_directory(home: Path) -> None:
    sub = home / "conf"
    sub.mkdir()
    (sub / "dialer.yaml").write_text("edge_tls: {ca_file: ../certs/backend-ca.pem}\n")
    config = load_dialer_config(str(sub / "dialer.yaml"))
    assert config.edge_tls.ca_file == str(sub / ".." / "certs" / "backend-ca.pem")
    (sub / "bad.yaml").write_text("edge_tls: {ca_file: certs/backend-ca.pem}\n")
    with pytest.raises(ConfigError, match=re.escape(f"relative paths are read from {sub}")):
        load_dialer_config(str(sub / "bad.yaml"))


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_dialer_config(str(tmp_path / "missing.yaml"))

"""Tests for kedge.edge.auth.policy (decisions), principal (names) and client_cert (X.509 names).

Certificates come from tests/support/pki.py (real DER, as a TLS handshake hands it over).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from kedge.edge.auth.client_cert import CertIdentities, parse_client_cert
from kedge.edge.auth.policy import Decision, Verdict, decide, pattern_matches
from kedge.edge.auth.principal import CertIdentity, Principal, TokenIdentity
from kedge.edge.config import PermissionMode, PrincipalKind, PrincipalPattern, RouteAuth
from tests.support.pki import SERVER_AUTH, SPIFFE_PREFIX, PkiCert, TestPki

ANY = PermissionMode.ANY_OF
ALL = PermissionMode.ALL_OF

CERT = CertIdentity(
    subject="CN=client-a,O=kedge tests",
    common_name="client-a",
    dns_names=("client-a.test", "alt.client-a.test"),
    uris=("spiffe://cluster.test/ns/apps/sa/client-a", "https://id.test/a"),
    issuer="CN=kedge test root CA,O=kedge tests",
    serial=1,
    has_eku=True,
    client_auth=True,
)
TOKEN = TokenIdentity(
    issuer_name="corp",
    subject="svc-a",
    groups=frozenset({"ops", "dev"}),
    permissions=frozenset({"svc.read", "svc.write"}),
    expires=2e9,
    key_id="k1",
)
NOBODY = Principal()
BY_CERT = Principal(cert=CERT)
BY_TOKEN = Principal(token=TOKEN)
BY_BOTH = Principal(cert=CERT, token=TOKEN)


def _p(text: str) -> PrincipalPattern:
    """A pattern as the config parser makes it: `kind[@issuer]:value`, trailing * = prefix."""
    kind, _, value = text.partition(":")
    kind, at, issuer = kind.partition("@")
    prefix = value.endswith("*")
    return PrincipalPattern(
        PrincipalKind(kind), value[:-1] if prefix else value, prefix, issuer if at else None
    )


def _auth(*principals: str, perms: tuple[str, ...] = (), mode: PermissionMode = ANY) -> RouteAuth:
    return RouteAuth(False, perms, mode, tuple(_p(p) for p in principals))


# --- decide -----------------------------------------------------------------------------

DECISIONS: list[tuple[str, RouteAuth, Principal, Verdict, str]] = [
    # (id, policy, principal, verdict, reason substring)
    ("anonymous, nobody", RouteAuth(anonymous=True), NOBODY, Verdict.ANONYMOUS, ""),
    ("anonymous, a token", RouteAuth(anonymous=True), BY_TOKEN, Verdict.ANONYMOUS, ""),
    ("any caller, nobody", RouteAuth(), NOBODY, Verdict.UNAUTHENTICATED, "no credential"),
    ("any caller, cert", RouteAuth(), BY_CERT, Verdict.ALLOW, ""),
    ("any caller, token", RouteAuth(), BY_TOKEN, Verdict.ALLOW, ""),
    ("any caller, both", RouteAuth(), BY_BOTH, Verdict.ALLOW, ""),
    # permissions
    ("perms, nobody", _auth(perms=("svc.read",)), NOBODY, Verdict.UNAUTHENTICATED, "no credential"),
    (
        "perms, cert alone carries none",
        _auth(perms=("svc.read",)),
        BY_CERT,
        Verdict.UNAUTHENTICATED,
        "bearer token",
    ),
    ("any_of, one held", _auth(perms=("svc.admin", "svc.read")), BY_TOKEN, Verdict.ALLOW, ""),
    ("any_of, held by cert+token", _auth(perms=("svc.read",)), BY_BOTH, Verdict.ALLOW, ""),
    (
        "any_of, none held",
        _auth(perms=("svc.admin", "svc.root")),
        BY_TOKEN,
        Verdict.DENIED,
        "corp/svc-a lacks permission svc.admin or svc.root",
    ),
    (
        "all_of, all held",
        _auth(perms=("svc.read", "svc.write"), mode=ALL),
        BY_TOKEN,
        Verdict.ALLOW,
        "",
    ),
    (
        "all_of, one missing",
        _auth(perms=("svc.read", "svc.admin"), mode=ALL),
        BY_TOKEN,
        Verdict.DENIED,
        "lacks permission svc.read and svc.admin",
    ),
    ("exact: case differs", _auth(perms=("SVC.READ",)), BY_TOKEN, Verdict.DENIED, "lacks"),
    ("exact: trailing space", _auth(perms=("svc.read ",)), BY_TOKEN, Verdict.DENIED, "lacks"),
    ("exact: no prefix match", _auth(perms=("svc",)), BY_TOKEN, Verdict.DENIED, "lacks"),
    ("exact: no wildcard", _auth(perms=("svc.*",)), BY_TOKEN, Verdict.DENIED, "lacks"),
    # principals
    (
        "uri exact",
        _auth("uri:spiffe://cluster.test/ns/apps/sa/client-a"),
        BY_CERT,
        Verdict.ALLOW,
        "",
    ),
    ("uri second SAN", _auth("uri:https://id.test/a"), BY_CERT, Verdict.ALLOW, ""),
    ("uri prefix", _auth("uri:spiffe://cluster.test/ns/apps/*"), BY_CERT, Verdict.ALLOW, ""),
    (
        "uri other",
        _auth("uri:spiffe://cluster.test/ns/apps/sa/client-b"),
        BY_CERT,
        Verdict.DENIED,
        "spiffe://cluster.test/ns/apps/sa/client-a is not allowed",
    ),
    (
        "uri prefix of another ns",
        _auth("uri:spiffe://cluster.test/ns/db/*"),
        BY_CERT,
        Verdict.DENIED,
        "",
    ),
    (
        "uri is not a prefix without *",
        _auth("uri:spiffe://cluster.test/ns/apps"),
        BY_CERT,
        Verdict.DENIED,
        "",
    ),
    ("dns", _auth("dns:alt.client-a.test"), BY_CERT, Verdict.ALLOW, ""),
    ("dns other", _auth("dns:client-b.test"), BY_CERT, Verdict.DENIED, ""),
    ("cn", _auth("cn:client-a"), BY_CERT, Verdict.ALLOW, ""),
    ("cn prefix", _auth("cn:client-*"), BY_CERT, Verdict.ALLOW, ""),
    ("cn case differs", _auth("cn:Client-A"), BY_CERT, Verdict.DENIED, ""),
    ("subject", _auth("subject:CN=client-a,O=kedge tests"), BY_CERT, Verdict.ALLOW, ""),
    ("subject reordered", _auth("subject:O=kedge tests,CN=client-a"), BY_CERT, Verdict.DENIED, ""),
    ("sub", _auth("sub:svc-a"), BY_TOKEN, Verdict.ALLOW, ""),
    ("sub prefix", _auth("sub:svc-*"), BY_TOKEN, Verdict.ALLOW, ""),
    ("sub other", _auth("sub:svc-b"), BY_TOKEN, Verdict.DENIED, "corp/svc-a is not allowed"),
    ("sub is not the qualified name", _auth("sub:corp/svc-a"), BY_TOKEN, Verdict.DENIED, ""),
    ("group", _auth("group:ops"), BY_TOKEN, Verdict.ALLOW, ""),
    ("group other", _auth("group:admins"), BY_TOKEN, Verdict.DENIED, ""),
    ("group is not a permission", _auth("group:svc.read"), BY_TOKEN, Verdict.DENIED, ""),
    (
        "cert kinds do not match a token",
        _auth("cn:svc-a", "uri:svc-a*"),
        BY_TOKEN,
        Verdict.DENIED,
        "",
    ),
    (
        "token kinds do not match a cert",
        _auth("sub:client-a", "group:client-*"),
        BY_CERT,
        Verdict.DENIED,
        "",
    ),
    ("any one pattern suffices", _auth("sub:nobody", "cn:client-a"), BY_BOTH, Verdict.ALLOW, ""),
    ("principals, nobody", _auth("cn:client-a"), NOBODY, Verdict.UNAUTHENTICATED, ""),
    # permissions and principals together: both must hold
    (
        "perms and principal hold",
        _auth("group:ops", perms=("svc.read",)),
        BY_TOKEN,
        Verdict.ALLOW,
        "",
    ),
    (
        "perms hold, principal not",
        _auth("group:admins", perms=("svc.read",)),
        BY_TOKEN,
        Verdict.DENIED,
        "not allowed",
    ),
    (
        "principal holds, perms not",
        _auth("group:ops", perms=("svc.admin",)),
        BY_TOKEN,
        Verdict.DENIED,
        "lacks",
    ),
    (
        "cert principal + token perms",
        _auth("uri:spiffe://cluster.test/*", perms=("svc.write",)),
        BY_BOTH,
        Verdict.ALLOW,
        "",
    ),
]


@pytest.mark.parametrize(
    ("policy", "principal", "verdict", "reason"),
    [c[1:] for c in DECISIONS],
    ids=[c[0] for c in DECISIONS],
)
def test_decide(policy: RouteAuth, principal: Principal, verdict: Verdict, reason: str) -> None:
    decision = decide(policy, principal)
    assert decision.verdict is verdict
    assert reason in decision.reason
    if verdict in (Verdict.ALLOW, Verdict.ANONYMOUS):
        assert decision == Decision(verdict)
    else:
        assert decision.reason  # a refusal always says why (it is logged)


# --- pattern_matches --------------------------------------------------------------------

NO_CN = CertIdentity("O=kedge tests", None, (), ("spiffe://x.test/a",), "CN=ca", 2, True, True)

PATTERNS: list[tuple[str, str, Principal, bool]] = [
    ("cn against a cert without CN", "cn:*", Principal(cert=NO_CN), False),
    ("subject of a cert without CN", "subject:O=kedge tests", Principal(cert=NO_CN), True),
    ("dns against a cert without DNS SANs", "dns:*", Principal(cert=NO_CN), False),
    ("empty prefix matches any uri", "uri:*", Principal(cert=NO_CN), True),
    ("empty prefix needs a value of that kind", "dns:*", BY_TOKEN, False),
    (
        "group against no groups",
        "group:*",
        Principal(token=TokenIdentity("c", "s", frozenset(), frozenset(), 1.0, "")),
        False,
    ),
    ("prefix equal to the whole value", "sub:svc-a*", BY_TOKEN, True),
    ("longer than the value", "sub:svc-a-b*", BY_TOKEN, False),
    ("nobody", "sub:*", NOBODY, False),
    ("sub scoped to the token's issuer", "sub@corp:svc-a", BY_TOKEN, True),
    ("sub scoped to another issuer", "sub@other:svc-a", BY_TOKEN, False),
    ("group scoped to the token's issuer", "group@corp:ops", BY_TOKEN, True),
    ("group scoped to another issuer", "group@other:ops", BY_TOKEN, False),
    ("scoped prefix", "sub@corp:svc*", BY_TOKEN, True),
    ("scoped pattern, certificate only", "sub@corp:*", BY_CERT, False),
    ("unscoped sub matches any issuer", "sub:svc-a", BY_TOKEN, True),
]


@pytest.mark.parametrize(
    ("pattern", "principal", "ok"), [c[1:] for c in PATTERNS], ids=[c[0] for c in PATTERNS]
)
def test_pattern_matches(pattern: str, principal: Principal, ok: bool) -> None:
    assert pattern_matches(_p(pattern), principal) is ok


# --- principal names ----------------------------------------------------------------------


def _cert(**changes: object) -> CertIdentity:
    fields = {
        "subject": "CN=c,O=o",
        "common_name": "c",
        "dns_names": ("c.test",),
        "uris": ("spiffe://t.test/c",),
        "issuer": "CN=ca",
        "serial": 3,
        "has_eku": True,
        "client_auth": True,
    }
    fields.update(changes)
    return CertIdentity(**fields)  # type: ignore[arg-type]


NAMES: list[tuple[str, Principal, str, bool]] = [
    ("nobody", NOBODY, "", False),
    ("cert: uri first", Principal(cert=_cert()), "spiffe://t.test/c", True),
    ("cert: first of several uris", Principal(cert=_cert(uris=("u:1", "u:2"))), "u:1", True),
    ("cert: dns without uri", Principal(cert=_cert(uris=())), "c.test", True),
    ("cert: cn without SANs", Principal(cert=_cert(uris=(), dns_names=())), "c", True),
    (
        "cert: subject without CN or SANs",
        Principal(cert=_cert(uris=(), dns_names=(), common_name=None)),
        "CN=c,O=o",
        True,
    ),
    (
        "cert: empty cn falls to subject",
        Principal(cert=_cert(uris=(), dns_names=(), common_name="")),
        "CN=c,O=o",
        True,
    ),
    ("token", BY_TOKEN, "corp/svc-a", True),
    ("token wins over cert", BY_BOTH, "corp/svc-a", True),
]


@pytest.mark.parametrize(
    ("principal", "name", "authenticated"), [c[1:] for c in NAMES], ids=[c[0] for c in NAMES]
)
def test_principal_name(principal: Principal, name: str, authenticated: bool) -> None:
    assert principal.name == name
    assert principal.authenticated is authenticated


# --- client certificates ----------------------------------------------------------------


ISSUED: dict[str, dict[str, object]] = {
    "no_cn": {"cn": "", "uris": ("spiffe://cluster.test/ns/x/sa/y",)},
    "subject_only": {"cn": ""},
    "cn_only": {"cn": "only-cn"},
    "mixed_case_dns": {"dns": ("Client-C.Test", "UPPER.test")},
    "many_uris": {"uris": ("spiffe://cluster.test/a", "urn:uuid:1234", "https://x.test/")},
    "ip_only": {"ips": ("127.0.0.1",)},
    "any_eku": {"eku": (ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)},
    "both_ekus": {"eku": (SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)},
    "code_signing": {"eku": (ExtendedKeyUsageOID.CODE_SIGNING,)},
    "rsa_client": {"key_type": "rsa", "dns": ("rsa.test",)},
    "special_chars": {"cn": 'a,b+c="d"'},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki: TestPki) -> dict[str, PkiCert]:
    """The PKI's named leaves plus the shapes of ISSUED, by name."""
    named = {
        name: getattr(pki, name)
        for name in ("client", "client_b", "no_eku", "server_eku_only", "via_intermediate")
    }
    issued = {name: pki.issue_client(name, **kw) for name, kw in ISSUED.items()}  # type: ignore[arg-type]
    return named | issued


def _der(cert: PkiCert) -> bytes:
    return cert.certificate.public_bytes(Encoding.DER)


ROOT = "CN=kedge test root CA,O=kedge tests"
CERTS: list[tuple[str, str, CertIdentity]] = [
    # (id, certificate name (attribute of TestPki, or an issued file), the identity without serial)
    (
        "client",
        "client",
        CertIdentity(
            "CN=client-a,O=kedge tests",
            "client-a",
            ("client-a.test",),
            (SPIFFE_PREFIX + "client-a",),
            ROOT,
            0,
            True,
            True,
        ),
    ),
    (
        "client_b",
        "client_b",
        CertIdentity(
            "CN=client-b,O=kedge tests",
            "client-b",
            ("client-b.test",),
            (SPIFFE_PREFIX + "client-b",),
            ROOT,
            0,
            True,
            True,
        ),
    ),
    (
        "no EKU extension",
        "no_eku",
        CertIdentity(
            "CN=no-eku,O=kedge tests",
            "no-eku",
            (),
            (SPIFFE_PREFIX + "no-eku",),
            ROOT,
            0,
            False,
            False,
        ),
    ),
    (
        "serverAuth only",
        "server_eku_only",
        CertIdentity(
            "CN=server-eku-only,O=kedge tests",
            "server-eku-only",
            (),
            (SPIFFE_PREFIX + "server-eku-only",),
            ROOT,
            0,
            True,
            False,
        ),
    ),
    (
        "via intermediate names its issuer",
        "via_intermediate",
        CertIdentity(
            "CN=via-intermediate,O=kedge tests",
            "via-intermediate",
            (),
            (SPIFFE_PREFIX + "via-intermediate",),
            "CN=kedge test intermediate CA,O=kedge tests",
            0,
            True,
            True,
        ),
    ),
    (
        "no CN, URI SAN",
        "no_cn",
        CertIdentity(
            "O=kedge tests", None, (), ("spiffe://cluster.test/ns/x/sa/y",), ROOT, 0, True, True
        ),
    ),
    (
        "subject only",
        "subject_only",
        CertIdentity("O=kedge tests", None, (), (), ROOT, 0, True, True),
    ),
    (
        "CN only",
        "cn_only",
        CertIdentity("CN=only-cn,O=kedge tests", "only-cn", (), (), ROOT, 0, True, True),
    ),
    (
        "DNS SANs are lower-cased",
        "mixed_case_dns",
        CertIdentity(
            "CN=mixed_case_dns,O=kedge tests",
            "mixed_case_dns",
            ("client-c.test", "upper.test"),
            (),
            ROOT,
            0,
            True,
            True,
        ),
    ),
    (
        "URI SANs in order, case kept",
        "many_uris",
        CertIdentity(
            "CN=many_uris,O=kedge tests",
            "many_uris",
            (),
            ("spiffe://cluster.test/a", "urn:uuid:1234", "https://x.test/"),
            ROOT,
            0,
            True,
            True,
        ),
    ),
    (
        "IP SAN is not a name",
        "ip_only",
        CertIdentity("CN=ip_only,O=kedge tests", "ip_only", (), (), ROOT, 0, True, True),
    ),
    (
        "anyExtendedKeyUsage counts as clientAuth",
        "any_eku",
        CertIdentity("CN=any_eku,O=kedge tests", "any_eku", (), (), ROOT, 0, True, True),
    ),
    (
        "serverAuth and clientAuth",
        "both_ekus",
        CertIdentity("CN=both_ekus,O=kedge tests", "both_ekus", (), (), ROOT, 0, True, True),
    ),
    (
        "codeSigning only",
        "code_signing",
        CertIdentity("CN=code_signing,O=kedge tests", "code_signing", (), (), ROOT, 0, True, False),
    ),
    (
        "RSA key",
        "rsa_client",
        CertIdentity(
            "CN=rsa_client,O=kedge tests", "rsa_client", ("rsa.test",), (), ROOT, 0, True, True
        ),
    ),
    (
        "RFC 4514 escaping",
        "special_chars",
        CertIdentity(
            'CN=a\\,b\\+c=\\"d\\",O=kedge tests', 'a,b+c="d"', (), (), ROOT, 0, True, True
        ),
    ),
]


@pytest.mark.parametrize(("name", "expected"), [c[1:] for c in CERTS], ids=[c[0] for c in CERTS])
def test_parse_client_cert(certs: dict[str, PkiCert], name: str, expected: CertIdentity) -> None:
    cert = certs[name]
    identity = parse_client_cert(_der(cert))
    assert identity.serial == cert.serial
    assert identity == CertIdentity(
        expected.subject,
        expected.common_name,
        expected.dns_names,
        expected.uris,
        expected.issuer,
        cert.serial,
        expected.has_eku,
        expected.client_auth,
    )


def test_parse_client_cert_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        parse_client_cert(b"\x30\x03\x02\x01\x01")


CERT_POLICY: list[tuple[str, str, str, Verdict]] = [
    # A real certificate through decide(): what the principal patterns of test_mtls mean.
    ("client: exact spiffe", "client", "uri:" + SPIFFE_PREFIX + "client-a", Verdict.ALLOW),
    (
        "client_b: refused by client-a's spiffe",
        "client_b",
        "uri:" + SPIFFE_PREFIX + "client-a",
        Verdict.DENIED,
    ),
    ("client_b: cn", "client_b", "cn:client-b", Verdict.ALLOW),
    ("client: dns", "client", "dns:client-a.test", Verdict.ALLOW),
    ("client_b: spiffe prefix", "client_b", "uri:spiffe://cluster.test/ns/apps/*", Verdict.ALLOW),
    ("client: subject", "client", "subject:CN=client-a,O=kedge tests", Verdict.ALLOW),
    ("no_cn: cn pattern", "no_cn", "cn:*", Verdict.DENIED),
]


@pytest.mark.parametrize(
    ("name", "pattern", "verdict"), [c[1:] for c in CERT_POLICY], ids=[c[0] for c in CERT_POLICY]
)
def test_real_certificates_against_patterns(
    certs: dict[str, PkiCert], name: str, pattern: str, verdict: Verdict
) -> None:
    cert = certs[name]
    principal = Principal(cert=parse_client_cert(_der(cert)))
    assert decide(_auth(pattern), principal).verdict is verdict


# --- CertIdentities (the per-certificate cache) ----------------------------------------------


def test_cert_identities_caches_by_der(pki: TestPki) -> None:
    cache = CertIdentities(size=4)
    first = cache.get(_der(pki.client))
    assert first == parse_client_cert(_der(pki.client))
    assert cache.get(bytes(_der(pki.client))) is first  # equal bytes, not the same object
    assert cache.get(_der(pki.client_b)) is not first


def test_cert_identities_evicts_the_least_recently_used(pki: TestPki) -> None:
    cache = CertIdentities(size=2)
    a, b, c = _der(pki.client), _der(pki.client_b), _der(pki.no_eku)
    ida = cache.get(a)
    idb = cache.get(b)
    assert cache.get(a) is ida  # a is now the most recent; b the least
    idc = cache.get(c)  # evicts b
    assert cache.get(a) is ida
    assert cache.get(c) is idc
    assert cache.get(b) is not idb  # parsed again
    assert cache.get(b) == idb


def test_cert_identities_size_one(pki: TestPki) -> None:
    cache = CertIdentities(size=1)
    a, b = _der(pki.client), _der(pki.client_b)
    ida = cache.get(a)
    cache.get(b)
    assert cache.get(a) is not ida

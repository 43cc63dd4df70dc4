"""Proof that tests/support/pki.py builds what it claims: real TLS handshakes and `openssl verify`.

The server side of each handshake is the stdlib `ssl` module with CERT_REQUIRED (what the edge's
listener builds on), so the verdicts here are the ones the edge inherits before applying its own
policy (hardening.md §2.10, M2-M8). The verdict is read on the server: in TLS 1.3 the client's
handshake completes before the server has judged the client certificate.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.pki import SPIFFE_PREFIX, PkiCert, TestPki

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str  # OpenSSL's verify message on rejection, "" on success
    peer_cn: str  # CN of the client certificate the server saw, "" if none


def server_context(pki: TestPki, *crls: Path, check_crl: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(pki.server.chain, pki.server.key)
    ctx.load_verify_locations(cafile=str(pki.ca.cert))
    for crl in crls:
        ctx.load_verify_locations(cafile=str(crl))
    if check_crl:
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def client_context(
    pki: TestPki, cert: PkiCert | None, *, send_chain: bool = True
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca.cert))
    if cert is not None:
        ctx.load_cert_chain(cert.chain if send_chain else cert.cert, cert.key)
    return ctx


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_name: str = "edge.test"
) -> Verdict:
    """One TLS handshake over a socketpair; the server's verdict on the client certificate."""
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(TIMEOUT)
    client_sock.settimeout(TIMEOUT)
    result: list[Verdict] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                peer = tls.getpeercert(binary_form=True)
                cn = ""
                if peer is not None:
                    cert = x509.load_der_x509_certificate(peer)
                    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                    cn = str(names[0].value) if names else ""
                result.append(Verdict(True, "", cn))
                tls.sendall(b"ok")
        except ssl.SSLCertVerificationError as exc:
            result.append(Verdict(False, exc.verify_message, ""))
        except (ssl.SSLError, OSError) as exc:
            result.append(Verdict(False, f"{type(exc).__name__}: {exc}", ""))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=server_name) as tls:
            # TLS 1.3: a rejected client certificate surfaces as an alert on the first read.
            try:
                got = tls.recv(2)
            except (ssl.SSLError, OSError):
                got = b""
    finally:
        thread.join(TIMEOUT)
        server_sock.close()
        client_sock.close()
    assert not thread.is_alive(), "server side of the handshake did not finish"
    verdict = result[0]
    # The client's view must agree with the server's verdict.
    assert (got == b"ok") == verdict.accepted, verdict
    return verdict


def names_of(cert: PkiCert) -> tuple[str, list[str], list[str], list[str]]:
    c = cert.certificate
    cns = c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (str(cns[0].value) if cns else "", [], [], [])
    return (
        str(cns[0].value) if cns else "",
        san.get_values_for_type(x509.DNSName),
        san.get_values_for_type(x509.UniformResourceIdentifier),
        [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
    )


def eku_of(cert: PkiCert) -> list[x509.ObjectIdentifier] | None:
    try:
        return list(
            cert.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )
    except x509.ExtensionNotFound:
        return None


# --- what the files contain -------------------------------------------------------------------

CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]
SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize(
    ("attr", "cn", "dns", "uris", "ips", "eku", "issuer"),
    [
        ("server", "edge.test", ["edge.test", "*.edge.test", "localhost"], [], ["127.0.0.1"],
         SERVER, "ca"),
        ("client", "client-a", ["client-a.test"], [SPIFFE_PREFIX + "client-a"], [], CLIENT, "ca"),
        ("client_b", "client-b", ["client-b.test"], [SPIFFE_PREFIX + "client-b"], [], CLIENT,
         "ca"),
        ("expired", "expired", [], [SPIFFE_PREFIX + "expired"], [], CLIENT, "ca"),
        ("unknown_ca", "unknown-ca", [], [SPIFFE_PREFIX + "unknown-ca"], [], CLIENT, "other_ca"),
        ("no_eku", "no-eku", [], [SPIFFE_PREFIX + "no-eku"], [], None, "ca"),
        ("server_eku_only", "server-eku-only", [], [SPIFFE_PREFIX + "server-eku-only"], [],
         SERVER, "ca"),
        ("via_intermediate", "via-intermediate", [], [SPIFFE_PREFIX + "via-intermediate"], [],
         CLIENT, "intermediate"),
    ],
)  # fmt: skip
def test_certificate_contents(
    pki: TestPki,
    attr: str,
    cn: str,
    dns: list[str],
    uris: list[str],
    ips: list[str],
    eku: list[x509.ObjectIdentifier] | None,
    issuer: str,
) -> None:
    cert: PkiCert = getattr(pki, attr)
    assert names_of(cert) == (cn, dns, uris, ips)
    assert eku_of(cert) == eku
    assert cert.issuer is getattr(pki, issuer)
    assert x509.load_pem_x509_certificate(cert.cert.read_bytes()) == cert.certificate
    basic = cert.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False


def test_validity_windows_are_anchored_on_now(pki: TestPki) -> None:
    now = pki.now
    assert pki.expired.certificate.not_valid_after_utc < now
    assert pki.not_yet_valid.certificate.not_valid_before_utc > now
    for cert in (pki.client, pki.server, pki.revoked, pki.ca, pki.intermediate):
        c = cert.certificate
        assert c.not_valid_before_utc < now < c.not_valid_after_utc, cert.name


def test_other_ca_copies_the_root_subject_but_not_its_key(pki: TestPki) -> None:
    assert pki.other_ca.certificate.subject == pki.ca.certificate.subject
    assert pki.unknown_ca.certificate.issuer == pki.client.certificate.issuer
    assert pki.other_ca.certificate.public_key() != pki.ca.certificate.public_key()
    basic = pki.intermediate.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (basic.value.ca, basic.value.path_length) == (True, 0)


def test_chain_files(pki: TestPki) -> None:
    def pems(path: Path) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(path.read_bytes())

    leaf, inter, root = pki.via_intermediate, pki.intermediate, pki.ca
    assert pems(leaf.chain) == [leaf.certificate, inter.certificate]
    assert pems(leaf.full_chain) == [leaf.certificate, inter.certificate, root.certificate]
    assert pems(inter.full_chain) == [inter.certificate, root.certificate]
    assert pems(pki.client.chain) == [pki.client.certificate]
    combined = pki.via_intermediate.combined.read_bytes()
    assert combined.startswith(leaf.chain.read_bytes())
    assert combined.endswith(leaf.key.read_bytes())


def test_crl_contents(pki: TestPki) -> None:
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert crl.is_signature_valid(pki.ca.certificate.public_key())  # type: ignore[arg-type]
    assert [r.serial_number for r in crl] == [pki.revoked.serial]
    assert crl.next_update_utc is not None and crl.next_update_utc > pki.now
    stale = x509.load_pem_x509_crl(pki.expired_crl.read_bytes())
    assert stale.next_update_utc is not None and stale.next_update_utc < pki.now


def test_existing_files_are_never_overwritten(pki: TestPki) -> None:
    with pytest.raises(FileExistsError):
        pki.issue_client("client")
    with pytest.raises(FileExistsError):
        pki.write_crl("crl", [])


def test_create_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    TestPki.create(tmp_path)
    assert time.perf_counter() - start < 1.0


# --- what stdlib ssl makes of them ------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "reason"),
    [
        ("client", ""),
        ("client_b", ""),
        ("revoked", ""),  # no CRL loaded: nothing says it is revoked
        ("no_eku", ""),  # no EKU means "any purpose" to OpenSSL: the edge needs its own policy
        ("via_intermediate", ""),  # the client sends the intermediate
        ("expired", "certificate has expired"),
        ("not_yet_valid", "certificate is not yet valid"),
        ("unknown_ca", "unable to get local issuer certificate"),
        ("server_eku_only", "unsuitable certificate purpose"),
    ],
)
def test_handshake_without_crl(pki: TestPki, attr: str, reason: str) -> None:
    cert: PkiCert = getattr(pki, attr)
    verdict = handshake(server_context(pki), client_context(pki, cert))
    assert verdict.reason == reason
    if not reason:
        assert verdict.peer_cn == names_of(cert)[0]


def test_no_client_certificate_is_rejected(pki: TestPki) -> None:
    verdict = handshake(server_context(pki), client_context(pki, None))
    assert not verdict.accepted
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in verdict.reason


def test_intermediate_leaf_without_its_chain_is_rejected(pki: TestPki) -> None:
    verdict = handshake(
        server_context(pki), client_context(pki, pki.via_intermediate, send_chain=False)
    )
    assert verdict.reason == "unable to get local issuer certificate"


def test_combined_file_loads_alone(pki: TestPki) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca.cert))
    ctx.load_cert_chain(pki.via_intermediate.combined)
    assert handshake(server_context(pki), ctx).peer_cn == "via-intermediate"


@pytest.mark.parametrize(
    ("attr", "reason"),
    [
        ("client", ""),
        ("client_b", ""),
        ("no_eku", ""),
        ("revoked", "certificate revoked"),
        ("expired", "certificate has expired"),
    ],
)
def test_handshake_with_crl(pki: TestPki, attr: str, reason: str) -> None:
    cert: PkiCert = getattr(pki, attr)
    verdict = handshake(server_context(pki, pki.crl, check_crl=True), client_context(pki, cert))
    assert verdict.reason == reason


@pytest.mark.parametrize(
    ("crl_attr", "reason"),
    [
        ("expired_crl", "CRL has expired"),
        (None, "unable to get certificate CRL"),  # CRL checking on, no CRL loaded
    ],
)
def test_crl_checking_fails_closed(pki: TestPki, crl_attr: str | None, reason: str) -> None:
    crls = [getattr(pki, crl_attr)] if crl_attr else []
    verdict = handshake(server_context(pki, *crls, check_crl=True), client_context(pki, pki.client))
    assert verdict.reason == reason


def test_fresh_crl_revokes_more(pki: TestPki) -> None:
    crl = pki.write_crl("crl-more", [pki.revoked, pki.client_b.serial])
    server = server_context(pki, crl, check_crl=True)
    assert handshake(server, client_context(pki, pki.client_b)).reason == "certificate revoked"
    assert handshake(server, client_context(pki, pki.revoked)).reason == "certificate revoked"
    assert handshake(server, client_context(pki, pki.client)).accepted


def test_issue_client_shapes(pki: TestPki) -> None:
    rsa = pki.issue_client("rsa-client", uris=[SPIFFE_PREFIX + "rsa"], key_type="rsa")
    assert rsa.certificate.public_key().key_size == 2048  # type: ignore[union-attr]
    assert handshake(server_context(pki), client_context(pki, rsa)).peer_cn == "rsa-client"

    bare = pki.issue_client("no-cn", cn="", dns=["bare.test"])
    assert names_of(bare) == ("", ["bare.test"], [], [])
    san = bare.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280: empty subject, critical SAN
    assert handshake(server_context(pki), client_context(pki, bare)).accepted

    # A leaf is not a CA: OpenSSL enforces basicConstraints on anything it signs (M8).
    forged = pki.issue_client("signed-by-leaf", issuer=pki.client)
    verdict = handshake(server_context(pki), client_context(pki, forged))
    assert verdict.reason == "invalid CA certificate"

    late = pki.issue_client(
        "late", not_before=pki.now - dt.timedelta(days=2), not_after=pki.now - dt.timedelta(hours=1)
    )
    assert handshake(server_context(pki), client_context(pki, late)).reason == (
        "certificate has expired"
    )


@pytest.mark.parametrize(
    ("server_name", "ok"),
    [("edge.test", True), ("api.edge.test", True), ("localhost", True), ("127.0.0.1", True),
     ("a.b.edge.test", False), ("other.test", False)],
)  # fmt: skip
def test_server_certificate_names(pki: TestPki, server_name: str, ok: bool) -> None:
    server = server_context(pki)
    server.verify_mode = ssl.CERT_NONE
    client = client_context(pki, None)
    if ok:
        assert handshake(server, client, server_name).accepted
    else:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            handshake(server, client, server_name)


def test_accepted_certificates_pass_x509_strict(pki: TestPki) -> None:
    # VERIFY_X509_STRICT (the default in newer Pythons) wants AKI/SKI and well-formed extensions.
    server = server_context(pki)
    server.verify_flags |= ssl.VERIFY_X509_STRICT
    for cert in (pki.client, pki.no_eku, pki.via_intermediate):
        assert handshake(server, client_context(pki, cert)).accepted, cert.name


# --- a second opinion: the openssl command line -----------------------------------------------

OPENSSL = shutil.which("openssl")


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
@pytest.mark.parametrize(
    ("attr", "extra", "expect"),
    [
        ("client", [], "OK"),
        ("via_intermediate", ["-untrusted", "intermediate"], "OK"),
        ("via_intermediate", [], "unable to get local issuer certificate"),
        ("expired", [], "certificate has expired"),
        ("unknown_ca", [], "unable to get local issuer certificate"),
        ("server_eku_only", [], "unsuitable certificate purpose"),
        ("revoked", [], "OK"),
        ("revoked", ["-crl_check", "-CRLfile", "crl"], "certificate revoked"),
        ("client", ["-crl_check", "-CRLfile", "expired_crl"], "CRL has expired"),
    ],
)
def test_openssl_verify(pki: TestPki, attr: str, extra: list[str], expect: str) -> None:
    assert OPENSSL is not None
    files = {"intermediate": str(pki.intermediate.cert), "crl": str(pki.crl)}
    files["expired_crl"] = str(pki.expired_crl)
    args = [files.get(a, a) for a in extra]
    cert: PkiCert = getattr(pki, attr)
    proc = subprocess.run(
        [OPENSSL, "verify", "-CAfile", str(pki.ca.cert), "-purpose", "sslclient", *args,
         str(cert.cert)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    if expect == "OK":
        assert proc.returncode == 0, out
        assert out.strip() == f"{cert.cert}: OK"
    else:
        assert proc.returncode != 0, out
        assert expect in out

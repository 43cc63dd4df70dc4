"""A throwaway test PKI (root, look-alike root, intermediate, server and client certs, CRLs).

Built with `cryptography` rather than trustme because the mTLS tests need shapes trustme cannot
make: expired and not-yet-valid leaves, leaves without an extendedKeyUsage extension, leaves with
the wrong EKU, and CRLs (current and expired). Everything is written as PEM under one directory
and exposed as paths, so tests can hand the files to `ssl`, to `openssl`, or to the edge's config.

`TestPki.create(directory)` builds the whole set (EC P-256 keys, well under a second) and is
meant for a session- or module-scoped fixture; `issue_client()` and `write_crl()` make more
shapes on demand. Validity windows are anchored on the `now` given to `create()` so a test can
reason about them exactly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CLIENT_AUTH",
    "SERVER_AUTH",
    "SPIFFE_PREFIX",
    "KeyType",
    "PkiCert",
    "PrivateKey",
    "TestPki",
]

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
SPIFFE_PREFIX = "spiffe://cluster.test/ns/apps/sa/"

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_ORG = "kedge tests"
_ROOT_CN = "kedge test root CA"
_DAY = dt.timedelta(days=1)
_HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class PkiCert:
    """One issued certificate, its key and the PEM files written for it.

    `chain` is what a TLS peer sends: this certificate then every issuer below the self-signed
    root (so for a leaf signed directly by the root it holds the leaf alone). `full_chain` also
    ends with the root. `combined` is `chain` followed by the private key, for tools that take
    one file (`ssl.SSLContext.load_cert_chain(combined)`, `curl --cert`).
    """

    name: str
    certificate: x509.Certificate
    private_key: PrivateKey
    issuer: PkiCert | None  # None for a self-signed root
    cert: Path
    key: Path
    chain: Path
    full_chain: Path
    combined: Path

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def is_root(self) -> bool:
        return self.issuer is None

    def issuers(self) -> list[PkiCert]:
        """The issuing certificates, nearest first, ending with the root."""
        out: list[PkiCert] = []
        node = self.issuer
        while node is not None:
            out.append(node)
            node = node.issuer
        return out


@dataclass(frozen=True)
class TestPki:
    """The named certificates of the mTLS tests.

    Every leaf is EC P-256, valid [now - 1 h, now + 30 d], signed by `ca`, with EKU clientAuth, CN
    = its name with dashes and URI SAN `spiffe://cluster.test/ns/apps/sa/<cn>`, unless its
    comment below says otherwise. File names are `<name>.pem`, `<name>-key.pem`,
    `<name>-chain.pem`, `<name>-fullchain.pem`, `<name>-combined.pem`, plus `crl.pem` and
    `expired_crl.pem`. `create()` and the factories refuse to overwrite an existing file.
    """

    __test__ = False  # a helper, not a pytest test class (the name starts with "Test")

    directory: Path
    now: dt.datetime
    ca: PkiCert
    other_ca: PkiCert  # unrelated key, same subject name as `ca`
    intermediate: PkiCert  # under `ca`, pathlen 0
    server: PkiCert  # CN edge.test; DNS edge.test, *.edge.test, localhost; IP 127.0.0.1; serverAuth
    client: PkiCert  # CN client-a; DNS client-a.test; URI .../sa/client-a
    client_b: PkiCert  # CN client-b; DNS client-b.test; URI .../sa/client-b
    expired: PkiCert  # valid [now - 30 d, now - 1 d]
    not_yet_valid: PkiCert  # valid [now + 1 d, now + 30 d]
    unknown_ca: PkiCert  # signed by `other_ca`
    revoked: PkiCert  # listed in `crl` and `expired_crl`
    no_eku: PkiCert  # no extendedKeyUsage extension at all
    server_eku_only: PkiCert  # EKU serverAuth only
    via_intermediate: PkiCert  # signed by `intermediate`; its chain file holds both
    crl: Path  # by `ca`, revokes `revoked`, current
    expired_crl: Path  # by `ca`, revokes `revoked`, nextUpdate in the past

    @classmethod
    def create(cls, directory: Path, *, now: dt.datetime | None = None) -> TestPki:
        """Build the whole PKI under `directory` (created if missing); `now` anchors validity."""
        directory.mkdir(parents=True, exist_ok=True)
        now = now or dt.datetime.now(dt.UTC)
        if now.tzinfo is None:  # X.509 times are UTC; treat a naive clock reading as UTC
            now = now.replace(tzinfo=dt.UTC)
        now = now.replace(microsecond=0)  # certificates carry whole seconds
        ca = _make_ca(directory, "ca", now, None)
        other_ca = _make_ca(directory, "other_ca", now, None)
        intermediate = _make_ca(directory, "intermediate", now, ca)

        def leaf(
            name: str,
            *,
            cn: str | None = None,
            dns: Sequence[str] = (),
            uris: Sequence[str] | None = None,
            ips: Sequence[str] = (),
            eku: Sequence[x509.ObjectIdentifier] | None = (CLIENT_AUTH,),
            issuer: PkiCert = ca,
            not_before: dt.datetime | None = None,
            not_after: dt.datetime | None = None,
        ) -> PkiCert:
            cn = name.replace("_", "-") if cn is None else cn
            return _make_leaf(
                directory,
                name,
                issuer=issuer,
                cn=cn,
                dns=dns,
                uris=(SPIFFE_PREFIX + cn,) if uris is None else uris,
                ips=ips,
                eku=eku,
                not_before=not_before or now - _HOUR,
                not_after=not_after or now + 30 * _DAY,
                key_type="ec",
            )

        server = leaf(
            "server",
            cn="edge.test",
            dns=("edge.test", "*.edge.test", "localhost"),
            uris=(),
            ips=("127.0.0.1",),
            eku=(SERVER_AUTH,),
        )
        client = leaf("client", cn="client-a", dns=("client-a.test",))
        client_b = leaf("client_b", dns=("client-b.test",))
        revoked = leaf("revoked")
        crl = _write_crl(directory / "crl.pem", ca, [revoked.serial], now - _HOUR, now + 7 * _DAY)
        expired_crl = _write_crl(
            directory / "expired_crl.pem", ca, [revoked.serial], now - 30 * _DAY, now - _DAY
        )
        return cls(
            directory=directory,
            now=now,
            ca=ca,
            other_ca=other_ca,
            intermediate=intermediate,
            server=server,
            client=client,
            client_b=client_b,
            expired=leaf("expired", not_before=now - 30 * _DAY, not_after=now - _DAY),
            not_yet_valid=leaf("not_yet_valid", not_before=now + _DAY, not_after=now + 30 * _DAY),
            unknown_ca=leaf("unknown_ca", issuer=other_ca),
            revoked=revoked,
            no_eku=leaf("no_eku", eku=None),
            server_eku_only=leaf("server_eku_only", eku=(SERVER_AUTH,)),
            via_intermediate=leaf("via_intermediate", issuer=intermediate),
            crl=crl,
            expired_crl=expired_crl,
        )

    def issue_client(
        self,
        name: str,
        *,
        cn: str | None = None,
        dns: Sequence[str] = (),
        uris: Sequence[str] = (),
        ips: Sequence[str] = (),
        eku: Sequence[x509.ObjectIdentifier] | None = (CLIENT_AUTH,),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        issuer: PkiCert | None = None,
        key_type: KeyType = "ec",
    ) -> PkiCert:
        """Issue one more leaf, written as `<name>.pem` and friends in the PKI directory.

        `cn=None` gives the name as CN; `cn=""` gives a subject without a CN. No `dns`, `uris`
        or `ips` means no subjectAltName extension; `eku=None` means no extendedKeyUsage
        extension. `issuer` defaults to `ca`; any `PkiCert` works, including a non-CA leaf
        (OpenSSL must then reject the chain). Validity defaults to [now - 1 h, now + 30 d].
        Raises FileExistsError if `name` is taken.
        """
        return _make_leaf(
            self.directory,
            name,
            issuer=issuer or self.ca,
            cn=name if cn is None else cn,
            dns=dns,
            uris=uris,
            ips=ips,
            eku=eku,
            not_before=not_before or self.now - _HOUR,
            not_after=not_after or self.now + 30 * _DAY,
            key_type=key_type,
        )

    def write_crl(
        self,
        name: str,
        revoked: Iterable[PkiCert | int],
        *,
        issuer: PkiCert | None = None,
        last_update: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
    ) -> Path:
        """Write `<name>.pem`: a CRL by `issuer` (default `ca`) revoking the given certs/serials.

        Defaults make it current: lastUpdate an hour ago, nextUpdate in a week.
        """
        serials = [r if isinstance(r, int) else r.serial for r in revoked]
        return _write_crl(
            self.directory / f"{name}.pem",
            issuer or self.ca,
            serials,
            last_update or self.now - _HOUR,
            next_update or self.now + 7 * _DAY,
        )


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)]
    if cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key_usage(*, ca: bool, key_type: KeyType) -> x509.KeyUsage:
    # RSA key exchange in TLS 1.2 needs keyEncipherment; ECDHE suites only need digitalSignature.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not ca and key_type == "rsa",
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(directory: Path, name: str, now: dt.datetime, issuer: PkiCert | None) -> PkiCert:
    key = _new_key("ec")
    # `other_ca` deliberately reuses the root's subject: a verifier that matches issuers by name
    # alone would accept its leaves. Only key identifiers and signatures tell the two apart.
    subject = _name(_ROOT_CN if issuer is None else f"kedge test {name} CA")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 365 * _DAY)
        # pathlen 0 on the intermediate: it may sign leaves only (RFC 5280 §4.2.1.9).
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0),
            critical=True,
        )
        .add_extension(_key_usage(ca=True, key_type="ec"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(_aki(issuer), critical=False)
    certificate = builder.sign(key if issuer is None else issuer.private_key, hashes.SHA256())
    return _write(directory, name, certificate, key, issuer)


def _make_leaf(
    directory: Path,
    name: str,
    *,
    issuer: PkiCert,
    cn: str,
    dns: Sequence[str],
    uris: Sequence[str],
    ips: Sequence[str],
    eku: Sequence[x509.ObjectIdentifier] | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    key_type: KeyType,
) -> PkiCert:
    key = _new_key(key_type)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False, key_type=key_type), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    general_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    general_names += [x509.UniformResourceIdentifier(u) for u in uris]
    general_names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if general_names:
        # RFC 5280 §4.2.1.6: the SAN extension is critical when the subject is empty.
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=not cn)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    certificate = builder.sign(issuer.private_key, hashes.SHA256())
    return _write(directory, name, certificate, key, issuer)


def _aki(issuer: PkiCert) -> x509.AuthorityKeyIdentifier:
    ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _write(
    directory: Path,
    name: str,
    certificate: x509.Certificate,
    key: PrivateKey,
    issuer: PkiCert | None,
) -> PkiCert:
    issuers = [] if issuer is None else [issuer, *issuer.issuers()]
    below_root = [c for c in issuers if not c.is_root]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain_pem = _pem(certificate) + b"".join(_pem(c.certificate) for c in below_root)
    full_chain_pem = _pem(certificate) + b"".join(_pem(c.certificate) for c in issuers)
    paths = {
        suffix: directory / f"{name}{suffix}.pem"
        for suffix in ("", "-key", "-chain", "-fullchain", "-combined")
    }
    _claim(*paths.values())
    paths[""].write_bytes(_pem(certificate))
    paths["-key"].write_bytes(key_pem)
    paths["-key"].chmod(0o600)
    paths["-chain"].write_bytes(chain_pem)
    paths["-fullchain"].write_bytes(full_chain_pem)
    paths["-combined"].write_bytes(chain_pem + key_pem)
    paths["-combined"].chmod(0o600)
    return PkiCert(
        name=name,
        certificate=certificate,
        private_key=key,
        issuer=issuer,
        cert=paths[""],
        key=paths["-key"],
        chain=paths["-chain"],
        full_chain=paths["-fullchain"],
        combined=paths["-combined"],
    )


def _claim(*paths: Path) -> None:
    # A session-scoped PKI is shared by many tests: silently overwriting a file another test
    # relies on (say `crl.pem`) would make failures depend on test order, so refuse instead.
    for path in paths:
        if path.exists():
            raise FileExistsError(f"test PKI file already exists: {path}")


def _write_crl(
    path: Path,
    issuer: PkiCert,
    serials: Iterable[int],
    last_update: dt.datetime,
    next_update: dt.datetime,
) -> Path:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(last_update)
        .next_update(next_update)
        # RFC 5280 §5.2: conforming CRLs carry the AKI and a CRL number.
        .add_extension(_aki(issuer), critical=False)
        .add_extension(x509.CRLNumber(int(last_update.timestamp())), critical=False)
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(last_update)
            .build()
        )
    crl = builder.sign(issuer.private_key, hashes.SHA256())
    _claim(path)
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path

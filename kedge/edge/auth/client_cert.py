"""Client certificates to CertIdentity: names, EKU, and a bounded cache by certificate.

The TLS layer has already verified the chain, dates, purpose and (with CRLs) revocation;
this module only reads the names out of the DER the handshake produced. Parsing costs tens
of microseconds, so identities are cached per certificate: a connection is usually reused
for many requests, and many connections present the same certificate.
"""

from __future__ import annotations

from collections import OrderedDict

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kedge.edge.auth.principal import CertIdentity

__all__ = ["CertIdentities", "parse_client_cert"]


def parse_client_cert(der: bytes) -> CertIdentity:
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else None
    dns: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(name.lower() for name in san.get_values_for_type(x509.DNSName))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        pass
    has_eku = client_auth = False
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        has_eku = True
        client_auth = (
            ExtendedKeyUsageOID.CLIENT_AUTH in eku
            or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
        )
    except x509.ExtensionNotFound:
        pass
    return CertIdentity(
        subject=cert.subject.rfc4514_string(),
        common_name=cn if isinstance(cn, str) else None,
        dns_names=dns,
        uris=uris,
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        has_eku=has_eku,
        client_auth=client_auth,
    )


class CertIdentities:
    """A bounded LRU of parsed client certificates, keyed by their DER bytes."""

    __slots__ = ("_cache", "_size")

    def __init__(self, size: int = 1024) -> None:
        self._cache: OrderedDict[bytes, CertIdentity] = OrderedDict()
        self._size = size

    def get(self, der: bytes) -> CertIdentity:
        cache = self._cache
        found = cache.get(der)
        if found is not None:
            cache.move_to_end(der)
            return found
        identity = parse_client_cert(der)
        cache[der] = identity
        if len(cache) > self._size:
            cache.popitem(last=False)
        return identity

"""TLS contexts for listeners and for connections to endpoints.

TLS 1.2 is the floor (RFC 8996 deprecates 1.0/1.1); renegotiation is off. Listeners offer
ALPN `h2` then `http/1.1` when HTTP/2 is enabled; clients offer what the backend speaks.
HTTP/2 over TLS needs TLS 1.2 or later (RFC 9113 §9.2), which the floor already ensures.

Client certificates (mTLS) on a listener: `off` asks for none, `optional` verifies one if
the client sends it, `required` fails the handshake without a valid one. Verification is
OpenSSL's: chain to one of the configured CAs, validity dates (no leeway), the `sslclient`
purpose (an EKU without clientAuth is refused; a certificate with no EKU passes here and
the edge applies its own policy), and, when CRLs are given, revocation of the leaf. With
CRLs, OpenSSL fails closed: a leaf whose issuer has no CRL, or whose CRL is past its
nextUpdate, is refused.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["TlsPeer", "client_context", "remember_sni", "server_context", "tls_peer"]

ClientCertMode = Literal["off", "optional", "required"]

# The server name a client asked for (RFC 6066 §3) is only visible in the SNI callback;
# it is kept on the connection's SSLObject under this name.
_SNI_ATTRIBUTE = "kedge_sni"

_VERIFY_MODES = {"optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def remember_sni(ssl_object: object, server_name: str | None, _ctx: ssl.SSLContext) -> None:
    """The SNI callback's first job: keep the name the client asked for on the connection."""
    setattr(ssl_object, _SNI_ATTRIBUTE, server_name.lower() if server_name else None)


def server_context(
    cert_file: str,
    key_file: str,
    alpn: tuple[str, ...] = ("http/1.1",),
    *,
    client_cert_mode: ClientCertMode = "off",
    client_ca_files: Sequence[str] = (),
    crl_files: Sequence[str] = (),
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(list(alpn))
    ctx.sni_callback = remember_sni
    if client_cert_mode != "off":
        for ca in client_ca_files:
            ctx.load_verify_locations(cafile=ca)
        for crl in crl_files:
            ctx.load_verify_locations(cafile=crl)
        if crl_files:
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        ctx.verify_mode = _VERIFY_MODES[client_cert_mode]
    return ctx


def client_context(
    *,
    ca_file: str | None = None,
    insecure_skip_verify: bool = False,
    cert_file: str | None = None,
    key_file: str | None = None,
    alpn: tuple[str, ...] = ("http/1.1",),
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file is not None:
        ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(list(alpn))
    return ctx


@dataclass(frozen=True, slots=True)
class TlsPeer:
    """What a TLS client connection told the edge: the SNI name (lower-case, None when
    the client sent none) and its verified certificate (DER), if it presented one."""

    sni: str | None
    cert_der: bytes | None


def tls_peer(transport: object) -> TlsPeer | None:
    """The TLS facts of an accepted connection, or None for plaintext. Read once per
    connection: the certificate cannot change (renegotiation is off)."""
    get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return None
    ssl_object = get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return TlsPeer(getattr(ssl_object, _SNI_ATTRIBUTE, None), der or None)

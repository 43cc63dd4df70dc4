"""TLS contexts for listeners and for connections to endpoints.

TLS 1.2 is the floor (RFC 8996 deprecates 1.0/1.1); renegotiation is off. Listeners offer
ALPN `h2` then `http/1.1` when HTTP/2 is enabled; clients offer what the backend speaks.
HTTP/2 over TLS needs TLS 1.2 or later (RFC 9113 §9.2), which the floor already ensures.
"""

from __future__ import annotations

import ssl

__all__ = ["client_context", "server_context"]


def server_context(
    cert_file: str, key_file: str, alpn: tuple[str, ...] = ("http/1.1",)
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(list(alpn))
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

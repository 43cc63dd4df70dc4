"""The TLS context of a listener, built from its config (used by `check` and `serve`)."""

from __future__ import annotations

import ssl

from kedge.core.net.tls import server_context
from kedge.edge.config import ListenerTls

__all__ = ["listener_context", "tls_files"]


def listener_context(tls: ListenerTls, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    certs = tls.client_certs
    return server_context(
        tls.cert_file,
        tls.key_file,
        alpn,
        client_cert_mode=certs.mode.value,
        client_ca_files=certs.ca_files,
        crl_files=certs.crl_files,
    )


def tls_files(tls: ListenerTls) -> tuple[str, ...]:
    """Every file the listener's context is built from, watched for changes."""
    certs = tls.client_certs
    return (tls.cert_file, tls.key_file, *certs.ca_files, *certs.crl_files)

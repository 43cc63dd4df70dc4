"""TLS to an edge: verified against the configured CA, with an optional client certificate.

The client certificate may come from the config (`cert_file`/`key_file`) or from an auth
source (a kubeconfig user's `client-certificate-data`, an exec plugin): Python's `ssl` loads
certificates only from files, so in-memory PEM is written to a private temporary directory
(0700, files 0600) just for `load_cert_chain` and removed at once.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from collections import OrderedDict

from kedge.core.net.tls import client_context
from kedge.dialer.config import EdgeTls
from kedge.dialer.credentials import ClientCertificate

__all__ = ["EdgeSslContexts", "cert_identity", "edge_ssl_context"]


def edge_ssl_context(
    tls: EdgeTls,
    client_cert: ClientCertificate | None = None,
    *,
    alpn: tuple[str, ...] = ("h2",),
) -> ssl.SSLContext:
    """A client context for an edge; `client_cert` overrides the config's certificate."""
    ctx = client_context(
        ca_file=tls.ca_file,
        cert_file=tls.cert_file if client_cert is None else None,
        key_file=tls.key_file if client_cert is None else None,
        alpn=alpn,
    )
    if client_cert is not None:
        with tempfile.TemporaryDirectory(prefix="kedge-cert-") as private:
            os.chmod(private, 0o700)
            cert = os.path.join(private, "cert.pem")
            key = os.path.join(private, "key.pem")
            for path, data in ((cert, client_cert.cert_pem), (key, client_cert.key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(cert, key)
    return ctx


def cert_identity(client_cert: ClientCertificate | None) -> bytes:
    """A key for "the same client certificate" (b"" for none): connections and contexts
    made with one identity are never used for another."""
    return hashlib.sha256(client_cert.cert_pem).digest() if client_cert is not None else b""


class EdgeSslContexts:
    """Built contexts by (TLS settings, client certificate, ALPN): building one reads the CA
    file and may write a certificate to disk, so it is done once per combination. The least
    recently used go beyond `limit` (certificates rotate; old ones must not pile up)."""

    def __init__(self, limit: int = 32) -> None:
        self._limit = limit
        self._built: OrderedDict[tuple[EdgeTls, bytes, tuple[str, ...]], ssl.SSLContext] = (
            OrderedDict()
        )

    def get(
        self, tls: EdgeTls, client_cert: ClientCertificate | None, alpn: tuple[str, ...]
    ) -> ssl.SSLContext:
        key = (tls, cert_identity(client_cert), alpn)
        ctx = self._built.get(key)
        if ctx is not None:
            self._built.move_to_end(key)
            return ctx
        ctx = edge_ssl_context(tls, client_cert, alpn=alpn)
        self._built[key] = ctx
        while len(self._built) > self._limit:
            self._built.popitem(last=False)
        return ctx

    def clear(self) -> None:
        self._built.clear()

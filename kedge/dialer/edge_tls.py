"""TLS to an edge: verified against the configured CA, with an optional client certificate.

The client certificate may come from the config (`cert_file`/`key_file`) or from an auth
source (a kubeconfig user's `client-certificate-data`, an exec plugin): Python's `ssl` loads
certificates only from files, so in-memory PEM is written to a private temporary directory
(0700, files 0600) just for `load_cert_chain` and removed at once.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from kedge.core.net.tls import client_context
from kedge.dialer.config import EdgeTls
from kedge.dialer.credentials import ClientCertificate

__all__ = ["edge_ssl_context"]


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

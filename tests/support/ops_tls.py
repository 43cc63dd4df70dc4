"""TLS material and an HTTPS recording backend for tests, from trustme (no real CA).

`tls_files(directory)` writes a CA, a server certificate (for `edge.test`, `backend.test`
and 127.0.0.1) and its key as PEM files. `https_backend(context)` serves HTTP/1.1 over TLS
on 127.0.0.1 and records each request head (GET-style requests without bodies).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["HttpsBackend", "TlsFiles", "empty_crl", "https_backend", "tls_files"]


@dataclass(frozen=True)
class TlsFiles:
    ca: trustme.CA
    server: trustme.LeafCert
    ca_file: str
    cert_file: str  # chain, leaf first
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.configure_cert(ctx)
        return ctx


def tls_files(directory: str, prefix: str = "") -> TlsFiles:
    ca = trustme.CA()
    server = ca.issue_cert("edge.test", "backend.test", "127.0.0.1")
    paths = [os.path.join(directory, f"{prefix}{n}") for n in ("ca.pem", "cert.pem", "key.pem")]
    ca.cert_pem.write_to_path(paths[0])
    with open(paths[1], "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    server.private_key_pem.write_to_path(paths[2])
    return TlsFiles(ca, server, *paths)


@dataclass
class HttpsBackend:
    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    handshakes: int = 0  # connections that completed the TLS handshake

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def https_backend(context: ssl.SSLContext) -> AsyncIterator[HttpsBackend]:
    state = HttpsBackend()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.handshakes += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                state.heads.append(head)
                body = b"tls backend"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def empty_crl(ca: trustme.CA, path: str | os.PathLike[str]) -> None:
    """An empty CRL signed by `ca`, valid from an hour ago for a day (for `crl_files`)."""
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    subject = x509.load_pem_x509_certificate(ca.cert_pem.bytes()).subject
    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(subject)
        .last_update(now - datetime.timedelta(hours=1))
        .next_update(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with open(path, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.PEM))

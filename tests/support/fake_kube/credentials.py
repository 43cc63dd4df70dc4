"""TLS material and kubeconfig files for the fake Kubernetes API.

`KubeTls` holds a throwaway trustme CA, the server certificate (127.0.0.1, localhost and the
in-cluster names) and issues client certificates the way the apiserver reads them: CN is the
user name, O the group. `write_kubeconfig` writes a one-context kubeconfig with everything
inline (`*-data` fields), which both kubectl and kubernetes_asyncio read.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
import yaml

__all__ = ["ClientCert", "KubeTls", "write_kubeconfig"]

SERVER_NAMES = ("127.0.0.1", "localhost", "kubernetes", "kubernetes.default.svc")


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its key, PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write `<stem>.crt` and `<stem>.key` under `directory`; return (cert, key)."""
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


class KubeTls:
    """A CA that signs the fake server's certificate and the clients' certificates."""

    def __init__(self) -> None:
        self._ca = trustme.CA(organization_name="fake-kube")
        self._server = self._ca.issue_cert(*SERVER_NAMES, common_name="kube-apiserver")

    @property
    def ca_pem(self) -> bytes:
        return self._ca.cert_pem.bytes()

    def issue_client_cert(self, user: str, group: str | None = None) -> ClientCert:
        leaf = self._ca.issue_cert(f"{user}.client.test", common_name=user, organization_name=group)
        return ClientCert(leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())

    def server_context(self, *, client_certs: bool) -> ssl.SSLContext:
        """The listener's context; with `client_certs`, certificates from this CA are checked
        when offered (Go's VerifyClientCertIfGiven, as kube-apiserver: a bad one fails the
        handshake, none at all leaves the request to token authentication)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.configure_cert(ctx)
        if client_certs:
            self._ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        # The real apiserver speaks h2 too; this one is HTTP/1.1 only, which Go clients accept.
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def client_context(self, cert: ClientCert | None = None) -> ssl.SSLContext:
        """A client context trusting this CA (for aiohttp tests), optionally presenting `cert`."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._ca.configure_trust(ctx)
        if cert is not None:
            with trustme.Blob(cert.cert_pem + cert.key_pem).tempfile() as path:
                ctx.load_cert_chain(path)
        return ctx


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes | None = None,
    token: str | None = None,
    client_cert: ClientCert | None = None,
    namespace: str | None = None,
    context: str = "fake-kube",
) -> Path:
    """Write a kubeconfig for `server` (https with `ca_pem`, or http) with a bearer token
    and/or a client certificate; return `path`."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = _b64(ca_pem)
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if client_cert is not None:
        user["client-certificate-data"] = _b64(client_cert.cert_pem)
        user["client-key-data"] = _b64(client_cert.key_pem)
    ctx: dict[str, Any] = {"cluster": context, "user": context}
    if namespace is not None:
        ctx["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": ctx}],
        "current-context": context,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path

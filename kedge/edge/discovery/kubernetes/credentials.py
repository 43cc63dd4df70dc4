"""Credentials for the API server: the in-cluster service account, or a kubeconfig context.

In cluster, the token is a projected service-account token that the kubelet rotates (about
hourly): it is re-read whenever its file changes, never cached for the process's life
(kEdge read it once). A kubeconfig context goes through kubernetes_asyncio's loader (token,
client certificate, exec plugin, OIDC auth-provider) with `persist_config=False`: its
persisting path rewrites the file on an OIDC refresh and crashes there. A 401 makes the
loader run again, which refreshes exec-plugin and OIDC tokens.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

from kedge.core.net.token_file import TokenFile
from kedge.edge.config import KubernetesConfig

__all__ = ["InClusterCredentials", "KubeconfigCredentials", "credentials_for"]

_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class InClusterCredentials:
    def __init__(
        self,
        *,
        server: str | None = None,
        token_file: str = f"{_SA_DIR}/token",
        ca_file: str = f"{_SA_DIR}/ca.crt",
    ) -> None:
        if server is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise OSError(
                    "not in a cluster: KUBERNETES_SERVICE_HOST is not set "
                    "(set kubernetes.kubeconfig to use a kubeconfig instead)"
                )
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        self._server = server
        self._token = TokenFile(token_file)
        self._ca_file = ca_file

    @property
    def server(self) -> str:
        return self._server

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self._ca_file)

    async def headers(self) -> Mapping[str, str]:
        # A small file on a tmpfs, read only when the kubelet rotated it.
        return {"authorization": f"Bearer {self._token.value()}"}

    async def refresh(self) -> None:
        self._token.forget()


class KubeconfigCredentials:
    """A kubeconfig context, loaded by kubernetes_asyncio (imported only when used)."""

    def __init__(self, path: str, context: str | None = None) -> None:
        self._path = path
        self._context = context
        self._config: object | None = None

    async def _load(self) -> object:
        from kubernetes_asyncio.client import Configuration
        from kubernetes_asyncio.config import load_kube_config

        config = Configuration()
        await load_kube_config(
            config_file=self._path,
            context=self._context,
            client_configuration=config,
            persist_config=False,
        )
        self._config = config
        return config

    @property
    def server(self) -> str:
        assert self._config is not None, "headers() first"
        return str(getattr(self._config, "host"))  # noqa: B009

    def ssl_context(self) -> ssl.SSLContext | None:
        config = self._config
        assert config is not None, "headers() first"
        if not getattr(config, "verify_ssl", True):
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=getattr(config, "ssl_ca_cert", None))
        cert = getattr(config, "cert_file", None)
        if cert:
            ctx.load_cert_chain(cert, getattr(config, "key_file", None))
        return ctx

    async def headers(self) -> Mapping[str, str]:
        config = self._config if self._config is not None else await self._load()
        api_key = getattr(config, "api_key", {}) or {}
        token = api_key.get("BearerToken") or api_key.get("authorization")
        if not token:
            return {}
        token = str(token)
        return {"authorization": token if token.startswith("Bearer ") else f"Bearer {token}"}

    async def refresh(self) -> None:
        await self._load()


def credentials_for(config: KubernetesConfig) -> InClusterCredentials | KubeconfigCredentials:
    """OSError when neither a kubeconfig is configured nor the edge runs in a cluster."""
    if config.kubeconfig is not None:
        return KubeconfigCredentials(config.kubeconfig, config.context)
    return InClusterCredentials(
        server=config.api_url, token_file=config.token_file, ca_file=config.ca_file
    )

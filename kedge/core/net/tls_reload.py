"""ReloadableServerContext: a listener's TLS material (certificate, key, client CAs, CRLs)
replaced without a restart, for the handshakes that start after the swap.

asyncio's server keeps the SSLContext it was created with. Python lets a server's SNI
callback move the connection to another context (`SSLObject.context = ...`, which is
OpenSSL's SSL_set_SSL_CTX), and OpenSSL runs that callback for every ClientHello, with or
without SNI. So the listening context stays, and its callback moves each new handshake to
the newest context built from the files. What moves with it: the certificate chain and
key, and the store of trusted client CAs and CRLs. What does not (OpenSSL copies them when
the connection is created): whether client certificates are asked for, and whether CRLs
are checked; changing those needs a restart. Connections already up keep their session.

`TlsFiles` stamps the files (mtime, size, inode; following symlinks, which catches the
`..data` swap of a Kubernetes Secret volume), so the edge can rebuild when cert-manager
renews a certificate or a CRL is republished, not only on a config reload.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Sequence

from kedge.core.net.tls import remember_sni

__all__ = ["ReloadableServerContext", "TlsFiles"]

Stamp = tuple[tuple[int, int, int] | None, ...]


class TlsFiles:
    """The files a context is built from, and their stamp when it was built."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(paths)
        self.seen = self.stamp()

    def stamp(self) -> Stamp:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)  # mid-replace: look again next time
                continue
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def changed(self) -> bool:
        """The files differ from the last build and are all present (a half-written Secret
        update is not built from)."""
        now = self.stamp()
        return now != self.seen and None not in now


class ReloadableServerContext:
    def __init__(self, build: Callable[[], ssl.SSLContext], files: Sequence[str]) -> None:
        self._build = build
        self.files = TlsFiles(files)
        self.listening = build()
        self.current = self.listening
        self.listening.sni_callback = self._on_client_hello
        self.generation = 0

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        remember_sni(ssl_object, server_name, ctx)
        current = self.current
        if current is not self.listening:
            ssl_object.context = current

    def rebuild(
        self,
        build: Callable[[], ssl.SSLContext] | None = None,
        files: Sequence[str] | None = None,
    ) -> None:
        """Build from the files (with a new recipe and file list after a config change) and
        swap; raises (ssl.SSLError, OSError) and keeps the current context if they do not
        load."""
        watched = TlsFiles(files) if files is not None else self.files
        stamp = watched.stamp()
        ctx = (build or self._build)()
        if build is not None:
            self._build = build
        self.files = watched
        self.current = ctx
        self.files.seen = stamp
        self.generation += 1

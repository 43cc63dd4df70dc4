"""A real, independent HTTP/2 server for backend tests: nghttpd from nghttp2.

`nghttpd_backend(root, tls=None)` serves the files under `root` over cleartext HTTP/2
(prior knowledge) or, given TlsFiles, over TLS with ALPN h2. POST bodies are echoed back
(`--echo-upload`) and every response with a body ends with the trailer `x-trailer: done`.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from tests.support.ops_tls import TlsFiles

__all__ = ["Nghttpd", "nghttpd_backend"]


@dataclass(frozen=True)
class Nghttpd:
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_listening(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if proc.returncode is not None:
            raise RuntimeError(f"nghttpd exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return
    raise RuntimeError("nghttpd did not start listening")


@asynccontextmanager
async def nghttpd_backend(root: str, tls: TlsFiles | None = None) -> AsyncIterator[Nghttpd]:
    if shutil.which("nghttpd") is None:
        pytest.skip("nghttpd (Debian package nghttp2-server) is not installed")
    port = _free_port()
    args = ["-a", "127.0.0.1", "-d", root, "--echo-upload", "--trailer", "x-trailer: done"]
    args += [str(port), tls.key_file, tls.cert_file] if tls else ["--no-tls", str(port)]
    proc = await asyncio.create_subprocess_exec(
        "nghttpd", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await _wait_listening(port, proc)
        yield Nghttpd(port)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()

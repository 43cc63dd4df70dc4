"""TLS on both sides of the edge, with trustme certificates.

Client side: a TLS listener serves curl over https (verified against the test CA), offers
ALPN `h2` then `http/1.1` (only `http/1.1` with `http2.enabled: false`), tells the
backend `X-Forwarded-Proto: https`, and survives plain HTTP sent to its TLS port.
Backend side: `tls: {ca_file}` reaches an HTTPS endpoint; a CA that did not sign the
endpoint's certificate gives 502 `upstream-connect` and nothing arrives.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.ops_client import curl
from tests.support.ops_tls import TlsFiles, https_backend, tls_files


def edge_yaml(tls: TlsFiles, backend: str) -> str:
    return f"""
listeners:
  - name: https
    address: 127.0.0.1:0
    tls:
      cert_file: {tls.cert_file}
      key_file: {tls.key_file}
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: app
    resolver:
      static:
        endpoints: ["{backend}"]
routes:
  - name: app
    backend: app
    match:
      host: edge.test
"""


@pytest.fixture
def tmpdir_() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        yield d


@pytest.fixture
async def setup(tmpdir_: str) -> AsyncIterator[tuple[RunningEdge, RecordingBackend, TlsFiles]]:
    tls = tls_files(tmpdir_)
    async with recording_backend() as be, running_edge(edge_yaml(tls, be.address)) as edge:
        yield edge, be, tls


def https_args(edge: RunningEdge, tls: TlsFiles, path: str = "/") -> tuple[str, ...]:
    port = edge.port("https")
    return ("--cacert", tls.ca_file, "--resolve", f"edge.test:{port}:127.0.0.1",
            f"https://edge.test:{port}{path}")  # fmt: skip


async def test_curl_over_https(setup: tuple[RunningEdge, RecordingBackend, TlsFiles]) -> None:
    edge, be, tls = setup
    res = await curl("--http1.1", *https_args(edge, tls, "/secure?q=1"))
    assert res.returncode == 0, res.stderr
    assert res.status == 200 and res.body == b"hello from backend"
    (req,) = be.requests
    assert req.target == "/secure?q=1"
    assert req.header("x-forwarded-proto") == "https"
    assert req.header("x-forwarded-host") == f"edge.test:{edge.port('https')}"
    forwarded = req.header("forwarded") or ""
    assert "proto=https" in forwarded, forwarded
    # The plain listener says http: the scheme comes from the listener, not the client.
    res = await curl("-H", "Host: edge.test", f"{edge.url}/plain")
    assert res.status == 200
    assert be.requests[1].header("x-forwarded-proto") == "http"


async def test_curl_without_the_ca_refuses_the_certificate(
    setup: tuple[RunningEdge, RecordingBackend, TlsFiles],
) -> None:
    edge, be, tls = setup
    args = [a for a in https_args(edge, tls) if a not in ("--cacert", tls.ca_file)]
    res = await curl(*args)
    assert res.returncode == 60, res.stderr  # CURLE_PEER_FAILED_VERIFICATION
    assert be.requests == []


async def test_curl_asking_for_http2_gets_h2(
    setup: tuple[RunningEdge, RecordingBackend, TlsFiles],
) -> None:
    edge, be, tls = setup
    res = await curl("--http2", "-v", *https_args(edge, tls))
    assert res.status == 200
    accepted = (b"ALPN: server accepted h2", b"ALPN, server accepted to use h2")
    assert any(a in res.stderr for a in accepted), res.stderr
    assert be.requests[-1].header("x-forwarded-proto") == "https"


async def _alpn(port: int, ca_file: str, offer: list[str]) -> str | None:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(offer)
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="edge.test"
    )
    try:
        obj = writer.get_extra_info("ssl_object")
        return obj.selected_alpn_protocol()  # type: ignore[no-any-return]
    finally:
        writer.close()


async def test_alpn_offers_h2_then_http11(
    setup: tuple[RunningEdge, RecordingBackend, TlsFiles],
) -> None:
    edge, _, tls = setup
    port = edge.port("https")
    assert await _alpn(port, tls.ca_file, ["h2", "http/1.1"]) == "h2"
    assert await _alpn(port, tls.ca_file, ["http/1.1", "h2"]) == "h2"  # server preference
    assert await _alpn(port, tls.ca_file, ["http/1.1"]) == "http/1.1"


async def test_alpn_without_http2_offers_http11_only(tmpdir_: str) -> None:
    tls = tls_files(tmpdir_)
    yaml_text = edge_yaml(tls, "127.0.0.1:9") + "http2:\n  enabled: false\n"
    async with running_edge(yaml_text) as edge:
        port = edge.port("https")
        assert await _alpn(port, tls.ca_file, ["h2", "http/1.1"]) == "http/1.1"
        # A client that only speaks h2 gets no protocol agreed (never h2).
        assert await _alpn(port, tls.ca_file, ["h2"]) is None


async def test_alpn_with_openssl_s_client(
    setup: tuple[RunningEdge, RecordingBackend, TlsFiles],
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    edge, _, tls = setup
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{edge.port('https')}",
        "-servername", "edge.test", "-alpn", "h2,http/1.1", "-CAfile", tls.ca_file,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    text = out.decode()
    assert "ALPN protocol: h2" in text, (text, err)
    assert "Verify return code: 0 (ok)" in text


async def test_plain_http_to_the_tls_port_fails_cleanly(
    setup: tuple[RunningEdge, RecordingBackend, TlsFiles],
) -> None:
    edge, be, tls = setup
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port("https"))
        writer.write(b"GET / HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        await writer.drain()
        # The edge ends the connection (at most a TLS alert): no HTTP response, no hang.
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert not data.startswith(b"HTTP/"), data
        rest = await asyncio.wait_for(reader.read(65536), 5)
        assert rest == b""
        writer.close()
    assert be.requests == []
    # The edge keeps serving, on both listeners.
    res = await curl(*https_args(edge, tls, "/after"))
    assert res.status == 200
    res = await curl("-H", "Host: edge.test", f"{edge.url}/after")
    assert res.status == 200
    assert [r.target for r in be.requests] == ["/after", "/after"]


def backend_tls_yaml(backend: str, ca_file: str, server_name: str | None = None) -> str:
    sni = f"\n      server_name: {server_name}" if server_name else ""
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: secure
    tls:
      ca_file: {ca_file}{sni}
    resolver:
      static:
        endpoints: ["{backend}"]
routes:
  - name: secure
    backend: secure
    match:
      host: secure.test
"""


@pytest.mark.parametrize("server_name", [None, "backend.test"])
async def test_backend_tls_with_the_right_ca(tmpdir_: str, server_name: str | None) -> None:
    tls = tls_files(tmpdir_)
    async with (
        https_backend(tls.server_context()) as be,
        running_edge(backend_tls_yaml(be.address, tls.ca_file, server_name)) as edge,
    ):
        for i in range(2):
            res = await curl("-H", "Host: secure.test", f"{edge.url}/tls/{i}")
            assert res.status == 200, (res.status, res.body)
            assert res.body == b"tls backend"
        assert [h.split(b"\r\n", 1)[0] for h in be.heads] == [
            b"GET /tls/0 HTTP/1.1",
            b"GET /tls/1 HTTP/1.1",
        ]
        assert be.handshakes == 1  # the pooled TLS connection was reused


async def test_backend_tls_with_a_wrong_ca_is_502(tmpdir_: str) -> None:
    right = tls_files(tmpdir_, "right-")
    wrong = tls_files(tmpdir_, "wrong-")
    async with (
        https_backend(right.server_context()) as be,
        running_edge(backend_tls_yaml(be.address, wrong.ca_file)) as edge,
    ):
        res = await curl("-H", "Host: secure.test", f"{edge.url}/")
        assert res.status == 502, (res.status, res.body)
        assert res.header("x-kedge-error-type") == "upstream-connect"
        assert b"Traceback" not in res.body
        assert be.heads == [] and be.handshakes == 0


async def test_backend_tls_with_a_wrong_server_name_is_502(tmpdir_: str) -> None:
    tls = tls_files(tmpdir_)
    async with (
        https_backend(tls.server_context()) as be,
        running_edge(backend_tls_yaml(be.address, tls.ca_file, "other.test")) as edge,
    ):
        res = await curl("-H", "Host: secure.test", f"{edge.url}/")
        assert res.status == 502
        assert res.header("x-kedge-error-type") == "upstream-connect"
        assert be.heads == []

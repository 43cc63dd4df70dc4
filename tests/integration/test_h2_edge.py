"""HTTP/2 clients through the edge to HTTP/1.1 backends, with real curl.

h2c with prior knowledge on the plaintext listener, ALPN `h2` on the TLS listener, an
`Upgrade: h2c` that is never forwarded, request bodies (known length and streamed), edge
errors rendered on the stream, and many concurrent streams on one connection.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.ops_client import curl
from tests.support.ops_tls import TlsFiles, tls_files


def edge_yaml(tls: TlsFiles, backend: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
  - name: https
    address: 127.0.0.1:0
    tls:
      cert_file: {tls.cert_file}
      key_file: {tls.key_file}
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
async def setup() -> AsyncIterator[tuple[RunningEdge, RecordingBackend, TlsFiles]]:
    with tempfile.TemporaryDirectory() as d:
        tls = tls_files(d)
        async with recording_backend() as be, running_edge(edge_yaml(tls, be.address)) as edge:
            yield edge, be, tls


def _h2c(edge: RunningEdge, path: str = "/hello") -> list[str]:
    return [
        "--http2-prior-knowledge",
        "-H",
        "Host: edge.test",
        f"http://127.0.0.1:{edge.port('http')}{path}",
    ]


async def test_h2c_prior_knowledge(setup: tuple[RunningEdge, RecordingBackend, TlsFiles]) -> None:
    edge, be, _ = setup
    res = await curl("-w", "\\n%{http_version}", *_h2c(edge, "/hello?x=1"))
    assert res.status == 200, res
    assert res.body.endswith(b"\n2")
    req = be.requests[-1]
    assert req.method == "GET"
    assert req.target == "/hello?x=1"
    assert req.header("host") == "edge.test"
    assert req.header("x-forwarded-proto") == "http"
    assert req.header("te") is None
    assert req.header("via") == "2 kedge"  # RFC 9110 §7.6.3: the protocol received
    assert res.header("via") == "1.1 kedge"  # the backend answered in HTTP/1.1
    rid = res.header("x-request-id")
    assert rid is not None and req.header("x-request-id") == rid


async def test_h2_over_tls_alpn(setup: tuple[RunningEdge, RecordingBackend, TlsFiles]) -> None:
    edge, be, tls = setup
    url = f"https://edge.test:{edge.port('https')}/tls"
    res = await curl(
        "--http2",
        "-w",
        "\\n%{http_version}",
        "--cacert",
        tls.ca_file,
        "--resolve",
        f"edge.test:{edge.port('https')}:127.0.0.1",
        url,
    )
    assert res.status == 200, res
    assert res.body.endswith(b"\n2")
    assert be.requests[-1].header("x-forwarded-proto") == "https"
    assert be.requests[-1].header("host") == f"edge.test:{edge.port('https')}"


async def test_upgrade_h2c_is_never_forwarded(
    setup: tuple[RunningEdge, RecordingBackend, TlsFiles],
) -> None:
    edge, be, _ = setup
    # curl --http2 on http:// sends `Upgrade: h2c` + HTTP2-Settings; the edge answers in
    # HTTP/1.1 and the backend sees neither header (h2c smuggling, hardening S21).
    res = await curl(
        "--http2", "-w", "\\n%{http_version}", "-H", "Host: edge.test",
        f"http://127.0.0.1:{edge.port('http')}/up",
    )  # fmt: skip
    assert res.status == 200
    assert res.body.endswith(b"\n1.1")
    req = be.requests[-1]
    assert req.header("upgrade") is None
    assert req.header("http2-settings") is None
    assert req.header("connection") is None


async def test_h2_request_bodies(setup: tuple[RunningEdge, RecordingBackend, TlsFiles]) -> None:
    edge, be, _ = setup
    body = b"x" * 300_000  # several windows' worth
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        res = await curl("--data-binary", f"@{f.name}", *_h2c(edge, "/upload"))
        assert res.status == 200, res
        assert be.requests[-1].body == body
        # Without a length (curl streams it): the backend gets it chunked.
        res = await curl(
            "-H", "Transfer-Encoding:", "-T", f.name, "-X", "POST",
            "-H", "Content-Length:", *_h2c(edge, "/stream"),
        )  # fmt: skip
        assert res.status == 200, res
        assert be.requests[-1].body == body


async def test_h2_edge_errors(setup: tuple[RunningEdge, RecordingBackend, TlsFiles]) -> None:
    edge, be, _ = setup
    before = len(be.requests)
    res = await curl(
        "--http2-prior-knowledge", "-H", "Host: nowhere.test",
        f"http://127.0.0.1:{edge.port('http')}/x",
    )  # fmt: skip
    assert res.status == 404
    assert res.header("x-kedge-error-type") == "no-route"
    assert b"no route" in res.body
    assert len(be.requests) == before


async def test_many_streams_on_one_connection(
    setup: tuple[RunningEdge, RecordingBackend, TlsFiles],
) -> None:
    edge, be, _ = setup
    if shutil.which("nghttp") is None:
        pytest.skip("nghttp (nghttp2-client) is not installed")
    # nghttp sends all 20 requests at once on one connection (curl 7.88's --parallel
    # with prior knowledge waits for the first response, then fails on its own side).
    proc = await asyncio.create_subprocess_exec(
        "nghttp", "-nv", "-m", "20", "-H", ":authority: edge.test",
        f"http://127.0.0.1:{edge.port('http')}/many",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    assert proc.returncode == 0, text
    assert text.count(":status: 200") == 20
    assert len(be.requests) == 20
    # All 20 streams were open before the first response came back.
    first_response = text.index(":status: 200")
    assert text[:first_response].count("send HEADERS frame") == 20


async def test_h2load_through_the_edge(
    setup: tuple[RunningEdge, RecordingBackend, TlsFiles],
) -> None:
    edge, be, _ = setup
    if shutil.which("h2load") is None:
        pytest.skip("h2load (nghttp2-client) is not installed")
    proc = await asyncio.create_subprocess_exec(
        "h2load", "-n", "2000", "-c", "4", "-m", "16", "-H", ":authority: edge.test",
        f"http://127.0.0.1:{edge.port('http')}/load",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert "2000 succeeded, 0 failed, 0 errored" in text, text
    assert "status codes: 2000 2xx" in text, text
    assert len(be.requests) == 2000

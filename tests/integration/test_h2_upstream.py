"""HTTP/2 backends (`protocol: h2c` and `h2`) behind the edge, served by a real nghttpd.

HTTP/1.1 and HTTP/2 clients both reach them; bodies stream both ways, trailers pass
through, and concurrent requests share one multiplexed upstream connection.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.edge import RunningEdge, running_edge
from tests.support.nghttpd import Nghttpd, nghttpd_backend
from tests.support.ops_client import admin_get, curl, metric_value
from tests.support.ops_tls import TlsFiles, tls_files


def edge_yaml(h2c: str, h2: str, ca_file: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: cleartext
    protocol: h2c
    resolver: {{static: {{endpoints: ["{h2c}"]}}}}
  - name: tls
    protocol: h2
    tls: {{ca_file: {ca_file}, server_name: backend.test}}
    resolver: {{static: {{endpoints: ["{h2}"]}}}}
routes:
  - backend: cleartext
    match: {{host: h2c.test}}
  - backend: tls
    match: {{host: h2.test}}
"""


@pytest.fixture
def root() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "hello.txt"), "wb") as f:
            f.write(b"hello over h2\n")
        with open(os.path.join(d, "big.bin"), "wb") as f:
            f.write(os.urandom(3_000_000))
        yield d


@pytest.fixture
async def setup(root: str) -> AsyncIterator[tuple[RunningEdge, Nghttpd, Nghttpd, str]]:
    with tempfile.TemporaryDirectory() as d:
        tls: TlsFiles = tls_files(d)
        async with (
            nghttpd_backend(root) as plain,
            nghttpd_backend(root, tls) as secure,
            running_edge(edge_yaml(plain.address, secure.address, tls.ca_file)) as edge,
        ):
            yield edge, plain, secure, root


def _url(edge: RunningEdge, path: str) -> str:
    return f"http://127.0.0.1:{edge.port('http')}{path}"


@pytest.mark.parametrize("host", ["h2c.test", "h2.test"])
@pytest.mark.parametrize("client", ["--http1.1", "--http2-prior-knowledge"])
async def test_get_through_h2_backends(
    setup: tuple[RunningEdge, Nghttpd, Nghttpd, str], host: str, client: str
) -> None:
    edge, *_ = setup
    res = await curl(client, "-H", f"Host: {host}", _url(edge, "/hello.txt"))
    assert res.status == 200, res
    assert res.body == b"hello over h2\n"
    assert res.header("via") is not None


@pytest.mark.parametrize("client", ["--http1.1", "--http2-prior-knowledge"])
async def test_big_download_and_upload_echo(
    setup: tuple[RunningEdge, Nghttpd, Nghttpd, str], client: str
) -> None:
    edge, _, _, root = setup
    big = os.path.join(root, "big.bin")
    with open(big, "rb") as f:
        expected = f.read()
    res = await curl(client, "-H", "Host: h2c.test", _url(edge, "/big.bin"))
    assert res.status == 200
    assert res.body == expected
    res = await curl(client, "-H", "Host: h2.test", "--data-binary", f"@{big}", _url(edge, "/echo"))
    assert res.status == 200, res.stderr
    assert res.body == expected


async def test_trailers_pass_through_to_http2_clients(
    setup: tuple[RunningEdge, Nghttpd, Nghttpd, str],
) -> None:
    edge, *_ = setup
    proc = await asyncio.create_subprocess_exec(
        "nghttp", "-v", "-H", ":authority: h2c.test", _url(edge, "/hello.txt"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    text = out.decode()
    assert "x-trailer: done" in text, text


async def test_http11_client_gets_the_body_when_trailers_cannot_be_framed(
    setup: tuple[RunningEdge, Nghttpd, Nghttpd, str],
) -> None:
    edge, *_ = setup
    # nghttpd sends Content-Length, so an HTTP/1.1 response has nowhere to put the
    # trailers (only chunked framing carries them): they are dropped, the body is intact
    # and the connection stays usable, as with nginx.
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port("http"))
    for _ in range(2):
        writer.write(b"GET /hello.txt HTTP/1.1\r\nHost: h2c.test\r\nTE: trailers\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"content-length: 14" in head.lower()
            assert await reader.readexactly(14) == b"hello over h2\n"
    writer.close()


async def test_concurrent_requests_share_one_upstream_connection(
    setup: tuple[RunningEdge, Nghttpd, Nghttpd, str],
) -> None:
    edge, *_ = setup
    results = await asyncio.gather(
        *(curl("-H", "Host: h2c.test", _url(edge, f"/hello.txt?{i}")) for i in range(10))
    )
    assert [r.status for r in results] == [200] * 10
    assert edge.app.admin is not None
    _, metrics = await admin_get(edge.app.admin.bound_port, "/metrics")
    opened = metric_value(
        metrics.decode(), "kedge_upstream_connections_opened_total", backend="cleartext"
    )
    assert opened is not None and opened <= 2  # one, or two if two dials raced the first

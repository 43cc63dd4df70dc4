"""Tests of the winch bench's pure parts: the four configs it renders and its summary."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme

from kedge.edge.config_parser import parse_edge_config
from winch.config import parse_winch_config_text

from .render import HIT_ROUTE_INDEX, ROUTE_COUNT
from .winch_setup import (
    EDGE_SERVER_NAME,
    TOKEN,
    WINCH_HOST,
    HopSample,
    format_ratios,
    format_winch_table,
    kedge_edge_config,
    nginx_edge_conf,
    nginx_local_conf,
    ratio,
    summarize_hops,
    winch_yaml,
)


@pytest.fixture
def pki(tmp_path: Path) -> tuple[str, str]:
    ca = trustme.CA()
    ca_file, pem = tmp_path / "ca.pem", tmp_path / "edge.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert(EDGE_SERVER_NAME).private_key_and_cert_chain_pem.write_to_path(str(pem))
    return str(ca_file), str(pem)


@pytest.mark.parametrize("tls", [False, True])
def test_kedge_edge_config_hits_the_winch_host_mid_table(tls: bool, pki: tuple[str, str]) -> None:
    pem = pki[1] if tls else None
    data = kedge_edge_config(listen_port=1001, admin_port=1002, backend_port=1003, tls_pem=pem)
    assert len(data["routes"]) == ROUTE_COUNT
    hosts = [r["match"]["host"] for r in data["routes"]]
    assert hosts.index(WINCH_HOST) == HIT_ROUTE_INDEX
    assert hosts.count(WINCH_HOST) == 1
    (listener,) = data["listeners"]
    assert listener["address"] == "127.0.0.1:1001"
    assert ("tls" in listener) is tls
    # The real edge parser accepts it (for TLS: the files exist and hold a key and a cert).
    config = parse_edge_config(data, "bench")
    assert (config.listeners[0].tls is not None) is tls


def test_winch_yaml_maps_the_bench_host_to_the_tls_edge(pki: tuple[str, str]) -> None:
    config = parse_winch_config_text(winch_yaml(edge_port=4443, ca_file=pki[0]))
    (route,) = config.dialer.routes
    assert route.backend_auth == "svc"
    assert route.proxy_auth is None
    assert config.dialer.edge_tls.server_name == EDGE_SERVER_NAME
    assert route.edge_url == "https://127.0.0.1:4443"


def test_kedge_edge_config_leaves_the_shared_render_untouched() -> None:
    # kedge_config builds fresh dicts: editing the hit route here must not leak into §1's.
    from .render import HIT_HOST, kedge_config

    kedge_edge_config(listen_port=1, admin_port=2, backend_port=3)
    fresh = kedge_config(listen_port=1, admin_port=2, backend_port=3)
    assert fresh["routes"][HIT_ROUTE_INDEX]["match"]["host"] == HIT_HOST


def test_nginx_local_conf_injects_the_token_and_verifies_the_edge() -> None:
    text = nginx_local_conf(prefix="/p", port=1, edge_port=2, ca_file="/ca.pem", is_root=False)
    assert f'proxy_set_header Authorization "Bearer {TOKEN}";' in text
    assert "proxy_ssl_verify on;" in text
    assert f"proxy_ssl_name {EDGE_SERVER_NAME};" in text
    assert "proxy_pass https://edge;" in text
    assert "server 127.0.0.1:2;" in text
    assert "listen 127.0.0.1:1 " in text
    assert "user root;" not in text
    as_root = nginx_local_conf(prefix="/p", port=1, edge_port=2, ca_file="/c", is_root=True)
    assert "user root;" in as_root


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None, reason="no nginx")
def test_rendered_nginx_pair_passes_nginx_t(tmp_path: Path, pki: tuple[str, str]) -> None:
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx is not None
    ca_file, pem = pki
    confs = {
        "local": nginx_local_conf(
            prefix=str(tmp_path), port=1, edge_port=2, ca_file=ca_file, is_root=False
        ),
        "edge": nginx_edge_conf(
            prefix=str(tmp_path),
            port=2,
            backend_port=3,
            tls_pem=pem,
            access_log=str(tmp_path / "a.log"),
            is_root=False,
        ),
    }
    for name, text in confs.items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text(text)
        cmd = [nginx, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "e.log")]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        assert done.returncode == 0, done.stderr


def _sample(rps: float, requests: int, **cpu: float) -> HopSample:
    return HopSample(rps, requests, 1000.0, 4000.0, 0, 10.0, cpu)


def test_summarize_hops_takes_medians_per_role_and_sums_errors() -> None:
    with_errors = HopSample(1200, 12_000, 1000.0, 4000.0, 2, 10.0, {"proxy": 3.6, "edge": 3.6})
    runs = [_sample(1000, 10_000, proxy=5.0, edge=4.0), with_errors]
    runs.append(_sample(900, 9_000, proxy=9.0, edge=2.7))
    (s,) = summarize_hops({"winch+edge": runs})
    assert s.rps == 1000
    assert s.reps == 3
    assert s.errors == 2
    assert s.us_per_request["proxy"] == pytest.approx(500.0)  # of 300, 500, 1000
    assert s.us_per_request["edge"] == pytest.approx(300.0)  # of 300, 400, 300
    assert s.busy["proxy"] == pytest.approx(0.5)  # of 0.36, 0.5, 0.9


def test_a_failed_run_does_not_poison_the_medians() -> None:
    nan = math.nan
    failed = HopSample(nan, 0, nan, nan, 1, 0.0, {})
    (s,) = summarize_hops({"x": [_sample(100, 1000, proxy=0.1), failed]})
    assert s.rps == 100
    assert s.us_per_request["proxy"] == pytest.approx(100.0)
    assert s.errors == 1


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [(4.0, 2.0, 2.0), (1.0, 0.0, math.nan), (math.nan, 1.0, math.nan), (1.0, math.nan, math.nan)],
)
def test_ratio(a: float, b: float, want: float) -> None:
    got = ratio(a, b)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_table_and_ratios_name_every_target() -> None:
    summaries = summarize_hops(
        {
            "direct": [_sample(40_000, 400_000, backend=4.0)],
            "edge": [_sample(5_000, 50_000, proxy=9.0, backend=1.0)],
            "winch+edge": [_sample(1_000, 10_000, proxy=4.0, edge=4.0, backend=0.2)],
            "nginx+nginx": [_sample(8_000, 80_000, proxy=4.0, edge=4.0, backend=1.0)],
        }
    )
    table = format_winch_table(summaries)
    for name in ("direct", "edge", "winch+edge", "nginx+nginx"):
        assert name in table
    lines = format_ratios(summaries)
    got = {line.rsplit(" ", 1)[0].strip(): line.rsplit(" ", 1)[1] for line in lines}
    assert got["CPU/req  winch / nginx local proxy"] == "8.00x"  # 400 vs 50 us
    assert got["CPU/req  kedge TLS edge / nginx TLS edge"] == "8.00x"
    assert got["CPU/req  winch / kedge edge (one plain hop)"] == "2.22x"  # 400 vs 180
    assert got["rps      winch+edge / nginx+nginx"] == "0.12x"
    assert got["rps      winch+edge / direct"] == "0.03x"


def test_ratios_without_the_nginx_pair_print_a_dash() -> None:
    summaries = summarize_hops({"winch+edge": [_sample(1_000, 10_000, proxy=4.0)]})
    assert all(line.endswith(" -") for line in format_ratios(summaries))

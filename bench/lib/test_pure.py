"""Tests of the bench harness's pure parts: wrk parsing, config rendering, summaries."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .idle import IdleResult
from .render import (
    BODY,
    HIT_HOST,
    HIT_ROUTE_INDEX,
    ROUTE_COUNT,
    fill_template,
    haproxy_conf,
    kedge_config,
    kedge_config_yaml,
    nginx_backend_conf,
    nginx_proxy_conf,
    template_dir,
)
from .report import RunSample, format_idle_table, format_table, summarize
from .wrk import WrkError, parse_latency_us, parse_wrk_output, wrk_command

# Real wrk 4.1.0 reports (the second with made-up error counts in wrk's own format).
CLEAN = """Running 3s test @ http://127.0.0.1:40000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.05ms    1.02ms  15.30ms   80.00%
    Req/Sec    27.40k     1.20k   29.00k    70.00%
  Latency Distribution
     50%    1.83ms
     75%    2.55ms
     90%    3.21ms
     99%    7.78ms
  82039 requests in 3.01s, 20.11MB read
Requests/sec:  27255.19
Transfer/sec:      6.68MB
"""
ERRORS = """Running 1s test @ http://127.0.0.1:18081/bad
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.89ms    1.54ms  11.76ms   86.55%
    Req/Sec    17.75k     7.43k   36.21k    90.00%
  Latency Distribution
     50%   94.00us
     75%    1.15ms
     90%    2.99ms
     99%    1.02s
  17811 requests in 1.01s, 6.35MB read
  Socket errors: connect 1, read 12, write 2, timeout 3
  Non-2xx or 3xx responses: 17811
Requests/sec:  17675.38
Transfer/sec:      6.30MB
"""


@pytest.mark.parametrize(
    ("text", "us"),
    [("94.00us", 94.0), ("1.15ms", 1150.0), ("2.00s", 2_000_000.0), ("1.50m", 90_000_000.0)],
)
def test_parse_latency_units(text: str, us: float) -> None:
    assert parse_latency_us(text) == pytest.approx(us)


@pytest.mark.parametrize("text", ["", "12", "1.0 ms", "fast"])
def test_parse_latency_rejects_garbage(text: str) -> None:
    with pytest.raises(WrkError):
        parse_latency_us(text)


def test_parse_clean_report() -> None:
    r = parse_wrk_output(CLEAN)
    assert (r.requests, r.duration_s, r.rps) == (82039, 3.01, 27255.19)
    assert (r.p50_us, r.p75_us, r.p90_us, r.p99_us) == pytest.approx((1830, 2550, 3210, 7780))
    assert r.errors == 0


def test_parse_report_with_errors() -> None:
    r = parse_wrk_output(ERRORS)
    assert r.p50_us == pytest.approx(94.0)
    assert r.p99_us == pytest.approx(1_020_000.0)
    assert (r.socket_connect, r.socket_read, r.socket_write, r.socket_timeout) == (1, 12, 2, 3)
    assert r.non_2xx_3xx == 17811
    assert r.errors == 17811 + 18


def test_parse_report_without_latency_distribution_fails() -> None:
    without = "\n".join(line for line in CLEAN.splitlines() if "%" not in line or "Req" in line)
    with pytest.raises(WrkError):
        parse_wrk_output(without)


def test_wrk_command_pins_and_sets_host() -> None:
    cmd = wrk_command(port=8080, host="bench.test", duration_s=3, connections=64, threads=1, cpu=1)
    assert cmd[:3] == ["taskset", "-c", "1"]
    assert cmd[3:] == [
        "wrk",
        "-t1",
        "-c64",
        "-d3s",
        "--latency",
        "-H",
        "Host: bench.test",
        "http://127.0.0.1:8080/",
    ]


def test_fill_template_replaces_and_rejects_missing() -> None:
    assert fill_template("a @X@ b @Y@ @X@", {"X": "1", "Y": "2"}) == "a 1 b 2 1"
    with pytest.raises(KeyError, match="Y"):
        fill_template("@X@ @Y@", {"X": "1"})


def test_body_is_100_plain_bytes() -> None:
    assert len(BODY.encode()) == 100
    assert '"' not in BODY and "\\" not in BODY and "$" not in BODY


def test_kedge_config_has_the_hit_route_mid_table() -> None:
    cfg = kedge_config(listen_port=1001, admin_port=1002, backend_port=1003)
    routes = cfg["routes"]
    assert len(routes) == ROUTE_COUNT
    assert routes[HIT_ROUTE_INDEX]["match"] == {"host": HIT_HOST}
    hosts = [r["match"]["host"] for r in routes]
    assert len(set(hosts)) == ROUTE_COUNT
    assert sum(h.startswith("svc-") and h.endswith(".bench.test") for h in hosts) == 999
    assert len({r["name"] for r in routes}) == ROUTE_COUNT
    assert {r["backend"] for r in routes} == {"bench"}
    assert cfg["listeners"] == [{"name": "plain", "address": "127.0.0.1:1001"}]
    assert cfg["admin"] == {"address": "127.0.0.1:1002"}
    (backend,) = cfg["backends"]
    assert backend["balancer"] == "round_robin"
    assert backend["resolver"] == {"static": {"endpoints": ["127.0.0.1:1003"]}}


def test_kedge_yaml_round_trips() -> None:
    text = kedge_config_yaml(listen_port=1, admin_port=2, backend_port=3)
    assert yaml.safe_load(text) == kedge_config(listen_port=1, admin_port=2, backend_port=3)


def _rendered(prefix: Path) -> dict[str, str]:
    d = template_dir()
    return {
        "backend": nginx_backend_conf(
            (d / "nginx_backend.conf.tmpl").read_text(), prefix=str(prefix), port=1, is_root=True
        ),
        "proxy": nginx_proxy_conf(
            (d / "nginx_proxy.conf.tmpl").read_text(),
            prefix=str(prefix),
            port=2,
            backend_port=1,
            access_log=str(prefix / "access.log"),
            is_root=False,
        ),
        "haproxy": haproxy_conf((d / "haproxy.cfg.tmpl").read_text(), port=2, backend_port=1),
    }


def test_templates_render_completely(tmp_path: Path) -> None:
    confs = _rendered(tmp_path)
    for text in confs.values():
        assert "@" not in text
    assert f'return 200 "{BODY}";' in confs["backend"]
    assert "access_log off;" in confs["backend"]
    assert "keepalive 64;" in confs["proxy"]
    assert f"access_log {tmp_path / 'access.log'} bench buffer=64k;" in confs["proxy"]
    assert "server backend1 127.0.0.1:1" in confs["haproxy"]


@pytest.mark.skipif(shutil.which("nginx", path="/usr/sbin:/usr/bin") is None, reason="no nginx")
def test_rendered_nginx_configs_pass_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin")
    assert nginx is not None
    for name, text in _rendered(tmp_path).items():
        if name == "haproxy":
            continue
        conf = tmp_path / f"{name}.conf"
        conf.write_text(text)
        done = subprocess.run(
            [nginx, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "e.log")],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def _run(rps: float, cpu_s: float, requests: int = 1000, errors: int = 0) -> RunSample:
    return RunSample(rps, requests, 100.0, 900.0, errors, cpu_s, 2.0)


def test_summarize_medians_and_ratios() -> None:
    out = summarize(
        {
            "direct": ("backend", [_run(300, 0.005)]),
            "nginx": ("proxy", [_run(100, 0.020), _run(120, 0.010), _run(90, 0.030)]),
            "kedge": ("proxy", [_run(50, 0.080, errors=1), _run(40, 0.100, errors=2)]),
        }
    )
    by = {s.target: s for s in out}
    assert by["nginx"].rps == 100 and by["nginx"].cpu_us_per_request == pytest.approx(20.0)
    assert by["nginx"].rps_vs_nginx == 1.0 and by["nginx"].cpu_vs_nginx == 1.0
    assert by["kedge"].rps == 45 and by["kedge"].cpu_us_per_request == pytest.approx(90.0)
    assert by["kedge"].rps_vs_nginx == pytest.approx(0.45)
    assert by["kedge"].cpu_vs_nginx == pytest.approx(4.5)
    assert by["kedge"].errors == 3
    assert by["direct"].cpu_of == "backend"
    assert by["direct"].cpu_busy == pytest.approx(0.0025)


def test_summarize_without_nginx_gives_nan_ratios() -> None:
    (only,) = summarize({"direct": ("backend", [_run(300, 0.005)])})
    assert math.isnan(only.rps_vs_nginx) and math.isnan(only.cpu_vs_nginx)
    assert "-" in format_table([only]).splitlines()[-1]


def test_run_without_requests_has_nan_cpu_per_request() -> None:
    assert math.isnan(RunSample(0.0, 0, 0.0, 0.0, 1, 1.0, 1.0).cpu_us_per_request)


def test_idle_kib_per_connection_and_table() -> None:
    r = IdleResult(connections=1000, failed=0, rss_before_bytes=10 << 20, rss_after_bytes=11 << 20)
    assert r.kib_per_connection == pytest.approx(1.024)
    assert "1.02" in format_idle_table({"nginx": r})
    assert math.isnan(IdleResult(0, 5, 1, 2).kib_per_connection)

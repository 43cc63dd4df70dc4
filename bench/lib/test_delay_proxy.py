"""Tests of the delay proxy (pure gate, loopback sockets, the CLI) and the balancing bench's
pure helpers (config, proxy startup lines, access-log counting, the Markdown section)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType

import pytest

from .delay_proxy import (
    DelayProxy,
    ProxySpec,
    ResponseGate,
    listening_line,
    listening_ports,
    parse_args,
    parse_spec,
)

HERE = Path(__file__).resolve().parent
TIMEOUT = 5.0


def _load_bench() -> ModuleType:
    """bench/run_balancing_bench.py is a script, not a package module: load it by path."""
    spec = importlib.util.spec_from_file_location(
        "run_balancing_bench", HERE.parent / "run_balancing_bench.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


# -- the gate (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "holds", "requests"),
    [
        ("cu", [0.5], 1),  # one request, one response
        ("cuu", [0.5, 0.0], 1),  # only a response's first chunk waits
        ("ccu", [0.5], 1),  # a request in two chunks is one request
        ("cucu", [0.5, 0.5], 2),  # keep-alive: every response waits
        ("u", [0.0], 0),  # bytes nobody asked for (a server greeting) pass at once
        ("cuuccuu", [0.5, 0.0, 0.5, 0.0], 2),
    ],
)
def test_gate_holds_each_responses_first_chunk(
    events: str, holds: list[float], requests: int
) -> None:
    gate = ResponseGate(0.5)
    got = []
    for e in events:
        if e == "c":
            gate.on_client_data()
        else:
            got.append(gate.on_upstream_data())
    assert got == holds
    assert gate.requests == requests


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("0:8080:2", ProxySpec(0, 8080, 2.0)),
        ("18001:80:2.5", ProxySpec(18001, 80, 2.5)),
        ("1:65535:0", ProxySpec(1, 65535, 0.0)),
    ],
)
def test_parse_spec(text: str, spec: ProxySpec) -> None:
    assert parse_spec(text) == spec


@pytest.mark.parametrize(
    "text", ["", "0:8080", "0:8080:2:1", "x:8080:2", "0:0:2", "70000:80:1", "0:80:-1", "0:80:nan"]
)
def test_parse_spec_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_spec(text)


def test_cli_rejects_a_bad_spec(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["0:80:-3"])
    assert exc.value.code == 2
    assert "delay must be >= 0" in capsys.readouterr().err


def test_delay_proxy_refuses_a_negative_delay() -> None:
    with pytest.raises(ValueError):
        DelayProxy("127.0.0.1", 80, -0.1)


# -- loopback ------------------------------------------------------------------------------


@asynccontextmanager
async def _server(handler: Callable[..., object]) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@asynccontextmanager
async def _proxy(target_port: int, delay_s: float) -> AsyncIterator[DelayProxy]:
    proxy = DelayProxy("127.0.0.1", target_port, delay_s)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.aclose()


def _line_server(gap_s: float = 0.0) -> Callable[..., object]:
    """For each line "x": answers "x-1\\n", then after `gap_s` "x-2\\n"; closes on EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                name = line.strip()
                writer.write(name + b"-1\n")
                await writer.drain()
                if gap_s:
                    await asyncio.sleep(gap_s)
                writer.write(name + b"-2\n")
                await writer.drain()
        finally:
            writer.close()

    return handle


async def _timed_line(reader: asyncio.StreamReader, started: float) -> tuple[bytes, float]:
    line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    return line, time.monotonic() - started


async def test_every_response_on_a_connection_is_delayed() -> None:
    delay = 0.15
    async with _server(_line_server()) as port, _proxy(port, delay) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        for name in (b"a", b"b"):
            started = time.monotonic()
            writer.write(name + b"\n")
            first, t1 = await _timed_line(reader, started)
            second, _ = await _timed_line(reader, started)
            assert (first, second) == (name + b"-1\n", name + b"-2\n")
            assert t1 >= delay * 0.95  # the event loop may round a timer a little early
        writer.close()
        assert (proxy.connections, proxy.requests) == (1, 2)


async def test_later_chunks_of_a_response_are_not_delayed_again() -> None:
    # The second chunk leaves the backend at 0.3 s: it must arrive then, not at 0.3 + 0.2.
    delay, gap = 0.2, 0.3
    async with _server(_line_server(gap)) as port, _proxy(port, delay) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        started = time.monotonic()
        writer.write(b"a\n")
        _, t1 = await _timed_line(reader, started)
        _, t2 = await _timed_line(reader, started)
        writer.close()
    assert t1 >= delay * 0.95
    assert gap * 0.95 <= t2 < gap + delay * 0.75


async def test_a_large_response_passes_whole() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: more than the proxy holds before pausing

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(body)
        await writer.drain()
        writer.close()

    async with _server(handle) as port, _proxy(port, 0.05) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"go\n")
        got = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the proxy closes
        writer.close()
    assert got == body


async def test_a_half_closed_client_still_gets_its_answer() -> None:
    async with _server(_line_server()) as port, _proxy(port, 0.01) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"a\n")
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
    assert got == b"a-1\na-2\n"


async def test_an_unreachable_target_closes_the_client_connection() -> None:
    async with _server(_line_server()) as port:
        pass  # the port is closed again: nothing listens there now
    async with _proxy(port, 0.01) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"a\n")
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()


async def test_aclose_ends_open_connections() -> None:
    async with _server(_line_server()) as port:
        proxy = DelayProxy("127.0.0.1", port, 0.0)
        await proxy.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"a\n")
        assert await asyncio.wait_for(reader.readexactly(8), TIMEOUT) == b"a-1\na-2\n"
        assert proxy.links
        await asyncio.wait_for(proxy.aclose(), TIMEOUT)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed by the proxy
        writer.close()
        assert not proxy.links


async def test_the_cli_runs_proxies_as_a_process_and_reports_on_sigterm() -> None:
    async with _server(_line_server()) as slow, _server(_line_server()) as fast:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "delay_proxy.py"), f"0:{slow}:20", f"0:{fast}:0",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            lines = [await asyncio.wait_for(proc.stdout.readline(), TIMEOUT) for _ in range(2)]
            ports = listening_ports(b"".join(lines).decode())
            assert set(ports) == {slow, fast}
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[slow])
            started = time.monotonic()
            writer.write(b"a\n")
            assert (await _timed_line(reader, started))[1] >= 0.019
            writer.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0
        assert b"1 connections, 1 requests" in out


# -- the bench's pure helpers --------------------------------------------------------------


def test_balancing_config_is_a_valid_kedge_config(tmp_path: Path) -> None:
    from kedge.edge.config_parser import load_edge_config

    data = bench.balancing_config(
        listen_port=18080, admin_port=18081, endpoint_ports=[19001, 19002], balancer="round_robin"
    )
    path = tmp_path / "kedge.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    config = load_edge_config(str(path))
    (backend,) = config.backends
    assert backend.balancer.value == "round_robin"
    assert [r.backend for r in config.routes] == ["bench"]


def test_a_balancer_kedge_rejects_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(bench.POLICIES, "p2c_ewma", ("no_such_balancer", "nor_this"))
    args = bench.parse_args(["--policies", "p2c_ewma"])
    reason = bench.start_edge(args, tmp_path, "p2c_ewma", [19001])
    assert isinstance(reason, str)
    assert "`balancer: no_such_balancer`" in reason and "`balancer: nor_this`" in reason
    assert "invalid config" in reason  # what `kedge check` said


def test_listening_ports_reads_back_listening_lines() -> None:
    text = (
        listening_line(41000, "127.0.0.1", ProxySpec(0, 8001, 20.0))
        + "\n"
        + listening_line(41001, "127.0.0.1", ProxySpec(0, 8002, 2.5))
        + "\ndelay_proxy 127.0.0.1:41000 done: 3 connections, 9 requests\n"
    )
    assert "127.0.0.1:41001 -> 127.0.0.1:8002 delay 2.5 ms" in text
    assert listening_ports(text) == {8001: 41000, 8002: 41001}
    assert listening_ports("delay_proxy listening on 127.0.0.1:41") == {}


def _line(endpoint: str | None, ms: float) -> str:
    return json.dumps({"time": "t", "status": 200, "endpoint": endpoint, "duration_ms": ms})


def test_read_access_log_counts_slow_hits_and_the_fast_tail() -> None:
    fast = [_line("127.0.0.1:2", float(ms)) for ms in range(1, 101)]  # 1..100 ms
    lines = [
        *fast,
        _line("127.0.0.1:1", 500.0),
        _line("127.0.0.1:1", 600.0),
        _line(None, 1.0),  # an error before any endpoint was picked
        json.dumps({"time": "t", "level": "info", "message": "reloaded"}),
        '{"endpoint": "127.0.0.1:2", "dura',  # torn last line
    ]
    log = "\n".join(lines).encode()
    assert bench.read_access_log(log, {"127.0.0.1:1"}) == (102, 2, 99.0)
    logged, slow, p99 = bench.read_access_log(b"", {"x"})
    assert (logged, slow) == (0, 0) and math.isnan(p99)


def _run(p99_ms: float, slow: int, rps: float = 1000.0) -> object:
    return bench.PolicyRun(rps, 1000.0, p99_ms * 1000.0, 0, 1000, slow, 3.0, 0.5, 0.0)


def test_format_section_ratios_shares_and_verdict() -> None:
    text = bench.format_section(
        "HEADER",
        {
            "round_robin": ("round_robin", [_run(20.0, 100), _run(24.0, 100), _run(22.0, 100)]),
            "least_request": ("p2c", [_run(11.0, 30)]),
            "p2c_ewma": ("p2c_ewma", [_run(8.8, 2), _run(9.0, 4)]),
        },
    )
    lines = text.splitlines()
    assert lines[0] == "HEADER"
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[4:7]}
    assert rows["round_robin"][3:6] == ["22.00", "1.00", "10.0%"]
    assert rows["least_request (`p2c`)"][3:6] == ["11.00", "0.50", "3.0%"]
    assert rows["p2c_ewma"][3:6] == ["8.90", "0.40", "0.3%"]
    assert lines[-1] == "p2c_ewma p99 / round_robin p99 = 0.40 (goal <= 0.5: met)"


def test_format_section_without_round_robin_has_no_ratio_or_verdict() -> None:
    text = bench.format_section("H", {"p2c_ewma": ("p2c_ewma", [_run(30.0, 5)])})
    row = text.splitlines()[-1].split(" | ")
    assert row[4] == "-"
    assert "goal" not in text


def test_format_section_says_when_the_goal_is_missed() -> None:
    text = bench.format_section(
        "H",
        {
            "round_robin": ("round_robin", [_run(20.0, 100)]),
            "p2c_ewma": ("p2c_ewma", [_run(15.0, 9)]),
        },
    )
    assert text.endswith("= 0.75 (goal <= 0.5: NOT met)")


@pytest.mark.parametrize(
    "argv",
    [["--policies", "nope"], ["--slow", "11"], ["--endpoints", "1"], ["--fast-ms", "-1"]],
)
def test_bench_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_bench_quick_and_policy_list() -> None:
    args = bench.parse_args(["--quick", "--policies", "p2c_ewma, round_robin"])
    assert (args.reps, args.duration) == (1, 3.0)
    assert args.policies == ["p2c_ewma", "round_robin"]

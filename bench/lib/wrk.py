"""wrk: building its command line and parsing its `--latency` report into numbers."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

__all__ = [
    "WrkError",
    "WrkResult",
    "parse_latency_us",
    "parse_wrk_output",
    "run_wrk",
    "wrk_command",
]

_UNIT_US = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0, "m": 60_000_000.0, "h": 3_600_000_000.0}
_LATENCY = re.compile(r"^([0-9.]+)(us|ms|s|m|h)$")
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


class WrkError(Exception):
    """wrk failed or printed a report this parser does not understand."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_us: float
    p75_us: float
    p90_us: float
    p99_us: float
    non_2xx_3xx: int  # wrk counts any status outside 200-399
    socket_connect: int
    socket_read: int
    socket_write: int
    socket_timeout: int

    @property
    def errors(self) -> int:
        return (
            self.non_2xx_3xx
            + self.socket_connect
            + self.socket_read
            + self.socket_write
            + self.socket_timeout
        )


def parse_latency_us(text: str) -> float:
    """'635.91us' / '1.20ms' / '2.00s' -> microseconds."""
    m = _LATENCY.match(text.strip())
    if m is None:
        raise WrkError(f"not a wrk latency: {text!r}")
    return float(m.group(1)) * _UNIT_US[m.group(2)]


def parse_wrk_output(text: str) -> WrkResult:
    percentiles = {int(p): parse_latency_us(v) for p, v in _PERCENTILE.findall(text)}
    total = _TOTAL.search(text)
    rps = _RPS.search(text)
    if total is None or rps is None or set(percentiles) != {50, 75, 90, 99}:
        raise WrkError("wrk output lacks the totals or the --latency distribution:\n" + text)
    socket = _SOCKET.search(text)
    connect, read, write, timeout = (int(g) for g in socket.groups()) if socket else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=float(total.group(2)) * _UNIT_US[total.group(3)] / 1_000_000.0,
        rps=float(rps.group(1)),
        p50_us=percentiles[50],
        p75_us=percentiles[75],
        p90_us=percentiles[90],
        p99_us=percentiles[99],
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_connect=connect,
        socket_read=read,
        socket_write=write,
        socket_timeout=timeout,
    )


def wrk_command(
    *,
    port: int,
    host: str,
    duration_s: float,
    connections: int,
    threads: int,
    cpu: int,
    headers: tuple[str, ...] = (),
) -> list[str]:
    """wrk pinned to `cpu`, keep-alive, with the latency distribution."""
    extra = [arg for h in headers for arg in ("-H", h)]
    return [
        "taskset",
        "-c",
        str(cpu),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "-H",
        f"Host: {host}",
        *extra,
        f"http://127.0.0.1:{port}/",
    ]


def run_wrk(cmd: list[str], *, duration_s: float) -> tuple[WrkResult, str]:
    """Run wrk to completion (bounded by a timeout) and parse its report."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration_s + 30.0, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {duration_s + 30.0:.0f} s") from exc
    if done.returncode != 0:
        said = (done.stderr + done.stdout).strip()
        raise WrkError(f"wrk exited {done.returncode}: {said}")
    return parse_wrk_output(done.stdout), done.stdout

"""Micro-benchmark: ns per counter inc, histogram observe and access-log record (the hot path).

Run: python bench/bench_observability.py [--number N] [--repeat R]
Prints the best of R runs of N calls each, in ns per call, including the Python call
itself (what the request path pays). Timed with process CPU time, so other processes
competing for the CPU do not inflate the numbers. Targets: counter inc < 1000 ns, access-log line
< 3000 ns.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kedge.core.metrics import EdgeMetrics, MetricsRegistry
from kedge.edge.observability.access_log import AccessLog

TARGETS_NS = {"counter inc (held child)": 1000.0, "access-log record": 3000.0}


class _NullStream(io.BytesIO):
    """Accepts every byte and keeps none, so flushes cost only the copy, not a disk."""

    def write(self, data: Any) -> int:
        return len(data)


def _cases() -> dict[str, Callable[[], object]]:
    registry = MetricsRegistry()
    m = EdgeMetrics(registry)
    child = m.requests.labels("web", "api", "api-pool", "200")
    hist = m.request_duration.labels("api", "api-pool")
    for i in range(50):  # a realistic number of series for the lookup and the scrape
        m.requests.labels("web", f"route-{i}", f"backend-{i}", "200").inc(i)
        m.request_duration.labels(f"route-{i}", f"backend-{i}").observe(i / 100)
    log = AccessLog(_NullStream(), time.time)
    ticks = iter(range(10**12))
    # Worst case: every line in a new millisecond, so the timestamp cache never hits.
    cold_log = AccessLog(_NullStream(), lambda: 1.7e9 + next(ticks) / 1000)

    def record(log: AccessLog = log) -> None:
        log.record(
            request_id="0f3c9a7e2b1d4c58",
            client="10.1.2.3:54321",
            listener="web",
            method="GET",
            authority="api.test",
            path="/v1/items/42?fields=name",
            status=200,
            bytes_in=0,
            bytes_out=1834,
            duration_ms=2.71828,
            route="api",
            backend="api-pool",
            endpoint="10.0.0.7:8080",
            error_kind=None,
        )

    return {
        "empty call (baseline)": lambda: None,
        "counter inc (held child)": child.inc,
        "counter labels() + inc": lambda: m.requests.labels("web", "api", "api-pool", "200").inc(),
        "gauge inc (held child)": m.connections_active.labels("web").inc,
        "histogram observe (held child)": lambda: hist.observe(0.0042),
        "access-log record": record,
        "access-log record (new ms each)": lambda: record(cold_log),
        "metrics render (~1k lines)": registry.render,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, best of {args.repeat} x {args.number} calls")
    failed = False
    for name, fn in _cases().items():
        number = args.number if "render" not in name else max(1, args.number // 2000)
        runs = timeit.repeat(fn, number=number, repeat=args.repeat, timer=time.process_time)
        best = min(runs) / number * 1e9
        target = TARGETS_NS.get(name)
        verdict = ""
        if target is not None:
            verdict = "  ok" if best < target else f"  OVER target {target:.0f} ns"
            failed |= best >= target
        print(f"{name:34s} {best:10.0f} ns{verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Locality bench (issue 6, evidence 2-4): kedge configs, access-log analysis, tables. Pure.

`bench/run_locality_bench.py` starts the processes; everything here is data in, data out:
the YAML-ready config of each kedge, the reading of kedge's JSON access log (who served
each request, when, with which status), and the Markdown tables with their verdicts.
"""

from __future__ import annotations

import calendar
import json
import math
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LOCAL_GOAL",
    "FailoverSummary",
    "LogEntry",
    "Phase",
    "failover_config",
    "failover_summary",
    "format_failover",
    "format_nearer",
    "format_zone",
    "median_ms",
    "nearer_config",
    "parse_time",
    "per_second",
    "read_entries",
    "remote_edge_config",
    "tally",
    "zone_config",
]

LOCAL_GOAL = 0.99  # evidence 2: at least 99% of requests stay in the local zone
HOST = "bench.test"  # the Host wrk sends (bench/lib/render.HIT_HOST)


# -- configs -------------------------------------------------------------------------------
def _edge(listen_port: int, admin_port: int, backend: dict[str, Any]) -> dict[str, Any]:
    """One plain listener, the admin listener, one backend and one route for HOST to it."""
    return {
        "listeners": [{"name": "plain", "address": f"127.0.0.1:{listen_port}"}],
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "backends": [backend],
        "routes": [{"name": "bench", "backend": backend["name"], "match": {"host": HOST}}],
    }


def _static(ports: Iterable[int], **labels: str) -> list[dict[str, Any]]:
    return [{"address": f"127.0.0.1:{p}", "labels": dict(labels)} for p in ports]


def zone_config(
    *, listen_port: int, admin_port: int, zone_a: Sequence[int], zone_b: Sequence[int]
) -> dict[str, Any]:
    """Evidence 2: an edge in zone a; one static p2c_ewma backend over zones a and b."""
    backend = {
        "name": "bench",
        "balancer": "p2c_ewma",
        "resolver": {
            "static": {"endpoints": _static(zone_a, zone="a") + _static(zone_b, zone="b")}
        },
    }
    return {"locality": {"zone": "a"}, **_edge(listen_port, admin_port, backend)}


def remote_edge_config(
    *, listen_port: int, admin_port: int, ports: Sequence[int]
) -> dict[str, Any]:
    """Cluster b's edge: routes HOST (kept by the calling edge) to its own endpoints."""
    backend = {
        "name": "bench",
        "balancer": "p2c_ewma",
        "resolver": {"static": {"endpoints": [f"127.0.0.1:{p}" for p in ports]}},
    }
    return {"locality": {"cluster": "b", "zone": "b"}, **_edge(listen_port, admin_port, backend)}


def failover_config(
    *,
    listen_port: int,
    admin_port: int,
    local: Sequence[int],
    remote_edge_port: int,
    interval_s: float,
    attempts: int,
) -> dict[str, Any]:
    """Evidence 3: cluster a's edge; its endpoints plus cluster b's edge as a remote cluster.

    Active HTTP checks every `interval_s` whose first failure (or pass) decides, and
    `attempts` tries per request, each on another endpoint.
    """
    backend = {
        "name": "bench",
        "balancer": "p2c_ewma",
        "resolver": {"static": {"endpoints": _static(local, cluster="a", zone="a")}},
        "remote_clusters": [{"name": "b", "endpoints": [f"127.0.0.1:{remote_edge_port}"]}],
        "health_check": {
            "http": {"path": "/"},
            "interval": f"{interval_s:g}s",
            "timeout": f"{min(interval_s, 1.0):g}s",
            "healthy_threshold": 1,
            "unhealthy_threshold": 1,
        },
        "retries": {"attempts": attempts},
    }
    return {"locality": {"cluster": "a", "zone": "a"}, **_edge(listen_port, admin_port, backend)}


def nearer_config(
    *, listen_port: int, admin_port: int, near_port: int, far_port: int, parked_port: int
) -> dict[str, Any]:
    """Evidence 4: a p2c_ewma backend served by two remote clusters of the same priority.

    kedge requires a resolver, so the backend has one static endpoint at `parked_port`
    (nothing listens there) labelled with a cluster no remote entry names: such endpoints
    form the farthest tier, which gets traffic only when the remote tier cannot take it all.
    """
    backend = {
        "name": "bench",
        "balancer": "p2c_ewma",
        "resolver": {"static": {"endpoints": _static([parked_port], cluster="parked")}},
        "remote_clusters": [
            {"name": "near", "endpoints": [f"127.0.0.1:{near_port}"], "priority": 0},
            {"name": "far", "endpoints": [f"127.0.0.1:{far_port}"], "priority": 0},
        ],
    }
    return {"locality": {"cluster": "a"}, **_edge(listen_port, admin_port, backend)}


# -- the access log ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LogEntry:
    """One request line of kedge's access log: when it finished, who served it, status."""

    time_s: float  # seconds since the epoch (millisecond resolution, truncated)
    endpoint: str | None
    status: int
    duration_ms: float = math.nan


def parse_time(text: str) -> float:
    """`2024-05-01T12:00:00.123Z` (kedge's RFC 3339 UTC) -> seconds since the epoch."""
    if not text.endswith("Z") or len(text) < 20 or text[10] != "T":
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    whole, _, frac = text[:-1].partition(".")
    date, clock = whole.split("T")
    year, month, day = (int(x) for x in date.split("-"))
    hour, minute, second = (int(x) for x in clock.split(":"))
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds + (int(frac) / 10 ** len(frac) if frac else 0.0)


def read_entries(log: bytes) -> list[LogEntry]:
    """The request lines of a JSON access log; event lines and a torn last line skipped.

    So are 499s: wrk closes its connections when its time is up, and the requests it
    abandons then were failed by nobody."""
    entries = []
    for line in log.splitlines():
        try:
            data = json.loads(line)
            if not isinstance(data, dict) or not isinstance(data.get("status"), int):
                continue
            if data["status"] == 499:
                continue
            endpoint = data.get("endpoint")
            when = parse_time(data["time"])
        except (ValueError, TypeError, KeyError):
            continue
        duration = data.get("duration_ms")
        entries.append(
            LogEntry(
                when,
                endpoint if isinstance(endpoint, str) else None,
                data["status"],
                float(duration) if isinstance(duration, int | float) else math.nan,
            )
        )
    return entries


def tally(entries: Iterable[LogEntry], groups: Mapping[str, str]) -> dict[str, int]:
    """Requests per group (`groups` maps endpoint -> group name); 5xx counted as `failed`,
    whoever answered, and endpoints outside `groups` as `other`."""
    counts = {name: 0 for name in dict.fromkeys(groups.values())}
    counts.update(failed=0, other=0)
    for e in entries:
        if e.status >= 500:
            counts["failed"] += 1
        else:
            name = groups.get(e.endpoint or "", "other")
            counts[name] += 1
    return counts


def median_ms(entries: Iterable[LogEntry], groups: Mapping[str, str]) -> dict[str, float]:
    """Median kedge `duration_ms` of the non-5xx requests per group."""
    durations: dict[str, list[float]] = {}
    for e in entries:
        if e.status < 500 and not math.isnan(e.duration_ms):
            durations.setdefault(groups.get(e.endpoint or "", "other"), []).append(e.duration_ms)
    return {name: statistics.median(values) for name, values in durations.items()}


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    requests: int
    local: int
    remote: int
    failed: int  # status >= 500


@dataclass(frozen=True, slots=True)
class FailoverSummary:
    """Evidence 3, from the access log; times in seconds relative to the event named."""

    phases: tuple[Phase, ...]
    last_local_after_kill_s: float | None  # last response a local endpoint served
    first_remote_after_kill_s: float | None
    first_local_after_restart_s: float | None
    last_remote_after_restart_s: float | None  # all local again from then on

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.phases)


def _phase(name: str, entries: Sequence[LogEntry], local: Collection[str]) -> Phase:
    failed = sum(1 for e in entries if e.status >= 500)
    near = sum(1 for e in entries if e.status < 500 and e.endpoint in local)
    return Phase(name, len(entries), near, len(entries) - failed - near, failed)


def failover_summary(
    entries: Sequence[LogEntry], local: Collection[str], kill_at: float, restart_at: float
) -> FailoverSummary:
    """Split the run at the kill and the restart (epoch seconds) and time the moves.

    A request is placed by when it finished (the log's time), so one in flight at the kill
    that a local endpoint still answered counts as local after the kill."""
    before = [e for e in entries if e.time_s < kill_at]
    down = [e for e in entries if kill_at <= e.time_s < restart_at]
    after = [e for e in entries if e.time_s >= restart_at]
    served_local = [e.time_s for e in down if e.status < 500 and e.endpoint in local]
    remote = [e.time_s for e in down if e.status < 500 and e.endpoint not in local]
    back = [e.time_s for e in after if e.status < 500 and e.endpoint in local]
    still_remote = [e.time_s for e in after if e.status < 500 and e.endpoint not in local]
    return FailoverSummary(
        phases=(
            _phase("before the kill", before, local),
            _phase("local endpoints down", down, local),
            _phase("after the restart", after, local),
        ),
        last_local_after_kill_s=max(served_local) - kill_at if served_local else None,
        first_remote_after_kill_s=min(remote) - kill_at if remote else None,
        first_local_after_restart_s=min(back) - restart_at if back else None,
        last_remote_after_restart_s=max(still_remote) - restart_at if still_remote else None,
    )


def per_second(
    entries: Iterable[LogEntry], local: Collection[str], start: float
) -> list[tuple[int, int, int, int]]:
    """(second since `start`, local, remote, failed) for every second with a request."""
    rows: dict[int, list[int]] = {}
    for e in entries:
        row = rows.setdefault(math.floor(e.time_s - start), [0, 0, 0])
        row[2 if e.status >= 500 else 0 if e.endpoint in local else 1] += 1
    return [(s, *rows[s]) for s in sorted(rows)]  # type: ignore[misc]


# -- tables ----------------------------------------------------------------------------------
def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "-"


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:,.0f} ms"


def format_zone(header: str, counts: Mapping[str, int], wrk_errors: int) -> str:
    """Evidence 2: requests per zone and the verdict (goal: >= 99% in zone a)."""
    served = counts.get("zone a", 0) + counts.get("zone b", 0) + counts.get("other", 0)
    total = served + counts.get("failed", 0)
    lines = [
        header,
        "",
        "| requests | zone a (local) | zone b | 5xx | wrk errors |",
        "|---|---|---|---|---|",
        f"| {total:,} | {counts.get('zone a', 0):,} ({_pct(counts.get('zone a', 0), total)}) "
        f"| {counts.get('zone b', 0):,} ({_pct(counts.get('zone b', 0), total)}) "
        f"| {counts.get('failed', 0)} | {wrk_errors} |",
    ]
    share = counts.get("zone a", 0) / total if total else math.nan
    met = "met" if share >= LOCAL_GOAL and not wrk_errors else "NOT met"
    lines.append(f"\nlocal share {share:.2%} (goal >= {LOCAL_GOAL:.0%}: {met})")
    return "\n".join(lines)


def format_failover(
    header: str,
    summary: FailoverSummary,
    timeline: Sequence[tuple[int, int, int, int]],
    *,
    wrk_non_2xx: int,
    wrk_socket_errors: int,
    interval_s: float,
) -> str:
    """Evidence 3: phases, the moves' timings against the health interval, the verdict.

    Failed requests are what wrk saw (non-2xx/3xx plus socket errors); kedge's 5xx lines are
    the same failures seen from the edge, so the larger of the two counts, not their sum."""
    lines = [
        header,
        "",
        "| phase | requests | local (cluster a) | remote (cluster b) | 5xx |",
        "|---|---|---|---|---|",
    ]
    for p in summary.phases:
        lines.append(
            f"| {p.name} | {p.requests:,} | {p.local:,} ({_pct(p.local, p.requests)}) "
            f"| {p.remote:,} ({_pct(p.remote, p.requests)}) | {p.failed} |"
        )
    lines += [
        "",
        "| event | after | health interval |",
        "|---|---|---|",
        f"| kill -> first remote response | {_ms(summary.first_remote_after_kill_s)} "
        f"| {interval_s:g} s |",
        f"| kill -> last local response | {_ms(summary.last_local_after_kill_s)} "
        f"| {interval_s:g} s |",
        f"| restart -> first local response | {_ms(summary.first_local_after_restart_s)} "
        f"| {interval_s:g} s |",
        f"| restart -> last remote response | {_ms(summary.last_remote_after_restart_s)} "
        f"| {interval_s:g} s |",
        "",
        "Per second (by the time each request finished): local / remote / 5xx",
        "",
        "| s | local | remote | 5xx |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s} | {a:,} | {b:,} | {c} |" for s, a, b, c in timeline]
    failed = max(summary.failed, wrk_non_2xx) + wrk_socket_errors
    moved = summary.last_local_after_kill_s
    back = summary.first_local_after_restart_s
    # One health interval plus its 10% jitter.
    limit = interval_s * 1.1
    checks = [
        f"failed requests {failed} (kedge 5xx {summary.failed}, wrk non-2xx {wrk_non_2xx}, "
        f"wrk socket errors {wrk_socket_errors}; goal 0: {'met' if failed == 0 else 'NOT met'})",
        f"moved off the local tier {_ms(moved)} after the kill (goal <= {limit:g} s: "
        f"{'met' if moved is not None and moved <= limit else 'NOT met'})",
        f"back {_ms(back)} after the restart (goal <= {limit:g} s: "
        f"{'met' if back is not None and back <= limit else 'NOT met'}), all local "
        f"{_ms(summary.last_remote_after_restart_s)} after it",
    ]
    return "\n".join(lines) + "\n\n" + "; ".join(checks)


def format_nearer(
    header: str, counts: Mapping[str, int], p50_ms: Mapping[str, float], wrk_errors: int
) -> str:
    """Evidence 4: requests per remote cluster; the verdict (goal: the nearer one gets more)."""
    total = sum(counts.values())
    lines = [
        header,
        "",
        "| cluster | requests | share | p50 ms (kedge) |",
        "|---|---|---|---|",
    ]
    for name in ("near", "far", "other", "failed"):
        n = counts.get(name, 0)
        p50 = p50_ms.get(name, math.nan)
        lines.append(
            f"| {name} | {n:,} | {_pct(n, total)} | {'-' if math.isnan(p50) else f'{p50:.2f}'} |"
        )
    near, far = counts.get("near", 0), counts.get("far", 0)
    met = near > far and not wrk_errors and not counts.get("failed", 0)
    lines.append(
        f"\nnear {_pct(near, total)} vs far {_pct(far, total)}, wrk errors {wrk_errors} "
        f"(goal: the nearer cluster gets most: {'met' if met else 'NOT met'})"
    )
    return "\n".join(lines)

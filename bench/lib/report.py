"""Pure summaries of bench runs: medians over repetitions, ratios to nginx, the text table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .idle import IdleResult

__all__ = [
    "RunSample",
    "TargetSummary",
    "format_idle_table",
    "format_table",
    "summarize",
]

REFERENCE = "nginx"


@dataclass(frozen=True, slots=True)
class RunSample:
    """One measured wrk run against one target, with the CPU the measured process used."""

    rps: float
    requests: int
    p50_us: float
    p99_us: float
    errors: int
    cpu_s: float  # user+system of the measured process tree during the run
    duration_s: float  # wall time wrk reports for the run

    @property
    def cpu_busy(self) -> float:
        """Fraction of one CPU the measured process used: near 1.0 means it was the bottleneck."""
        return self.cpu_s / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1_000_000.0 / self.requests if self.requests else math.nan


@dataclass(frozen=True, slots=True)
class TargetSummary:
    target: str
    cpu_of: str  # which process the CPU column measures ("proxy" or "backend")
    reps: int
    rps: float  # medians over the reps
    p50_us: float
    p99_us: float
    cpu_us_per_request: float
    cpu_busy: float
    errors: int  # summed over the reps
    rps_vs_nginx: float  # NaN when there is no nginx summary
    cpu_vs_nginx: float


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def summarize(samples: dict[str, tuple[str, Sequence[RunSample]]]) -> list[TargetSummary]:
    """`samples` maps target -> (cpu_of, runs); ratios are relative to the "nginx" target."""
    medians: dict[str, tuple[float, float]] = {
        name: (_median([r.rps for r in runs]), _median([r.cpu_us_per_request for r in runs]))
        for name, (_, runs) in samples.items()
    }
    ref_rps, ref_cpu = medians.get(REFERENCE, (math.nan, math.nan))
    out: list[TargetSummary] = []
    for name, (cpu_of, runs) in samples.items():
        rps, cpu = medians[name]
        out.append(
            TargetSummary(
                target=name,
                cpu_of=cpu_of,
                reps=len(runs),
                rps=rps,
                p50_us=_median([r.p50_us for r in runs]),
                p99_us=_median([r.p99_us for r in runs]),
                cpu_us_per_request=cpu,
                cpu_busy=_median([r.cpu_busy for r in runs]),
                errors=sum(r.errors for r in runs),
                rps_vs_nginx=rps / ref_rps if ref_rps else math.nan,
                cpu_vs_nginx=cpu / ref_cpu if ref_cpu else math.nan,
            )
        )
    return out


def _num(value: float, fmt: str) -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    head = "  ".join(cell.rjust(w) for cell, w in zip(header, widths, strict=True))
    return "\n".join([head, "-" * len(head), *lines])


def format_table(summaries: Sequence[TargetSummary]) -> str:
    header = [
        "target",
        "rps",
        "p50 ms",
        "p99 ms",
        "CPU us/req",
        "CPU of",
        "CPU busy",
        "rps/nginx",
        "CPU/nginx",
        "errors",
    ]
    rows = [
        [
            s.target,
            _num(s.rps, ",.0f"),
            _num(s.p50_us / 1000.0, ".3f"),
            _num(s.p99_us / 1000.0, ".3f"),
            _num(s.cpu_us_per_request, ".1f"),
            s.cpu_of,
            _num(s.cpu_busy, ".0%"),
            _num(s.rps_vs_nginx, ".2f"),
            _num(s.cpu_vs_nginx, ".2f"),
            str(s.errors),
        ]
        for s in summaries
    ]
    return _render(header, rows)


def format_idle_table(results: Mapping[str, IdleResult]) -> str:
    header = ["target", "held", "failed", "RSS before MiB", "RSS after MiB", "KiB/idle conn"]
    body = [
        [
            name,
            str(r.connections),
            str(r.failed),
            f"{r.rss_before_bytes / 1048576:.1f}",
            f"{r.rss_after_bytes / 1048576:.1f}",
            _num(r.kib_per_connection, ".2f"),
        ]
        for name, r in results.items()
    ]
    return _render(header, body)

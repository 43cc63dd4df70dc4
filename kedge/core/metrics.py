"""Metrics: a small per-instance Prometheus registry (the edge's and winch's metric sets use it).

Why not prometheus_client: it takes a lock on every increment and registers into a
process-global registry at import time. The edge runs one event loop per process, so a
child here is a plain slotted object whose `inc` is one attribute add, with no lock: on
one event loop nothing else runs during a `+=` (do not share a registry between threads).

Hot code resolves a child once (`counter.labels("a", "b")`) and keeps it; `labels` itself
is one dict lookup keyed by the label tuple. All formatting work (label escaping, the
text exposition format 0.0.4) happens at scrape time in `render`, or once when a child
is created.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import ClassVar, Generic, TypeVar

__all__ = [
    "DURATION_BUCKETS",
    "EXPOSITION_CONTENT_TYPE",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "MetricsRegistry",
]

EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request durations from sub-millisecond cache-like answers to long polls (60 s).
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

_NAME_RE = re.compile(r"(?:kedge|winch)_[a-z0-9_]*[a-z0-9]\Z")  # the two programs' prefixes
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Prometheus convention: base units only. Any of these tokens means a non-base time unit.
_FOREIGN_TIME_UNITS = frozenset(
    {"ms", "millis", "milliseconds", "us", "micros", "microseconds", "ns", "nanoseconds",
     "sec", "secs", "minutes", "hours", "days"}
)  # fmt: skip
# A name containing one of these measures time, so it must say `seconds`.
_TIME_WORDS = frozenset({"duration", "latency", "elapsed", "delay", "age", "uptime", "time"})
_RESERVED_SUFFIXES = ("_bucket", "_sum", "_count")


def _escape_label_value(value: str) -> str:
    # Text format 0.0.4: in label values, escape backslash, double quote and line feed.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    # Text format 0.0.4: in HELP, only backslash and line feed are escaped.
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    """A sample value as Go's ParseFloat reads it (`+Inf`, `-Inf`, `NaN`, shortest digits)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _check_name(name: str, kind: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"metric name {name!r} must match kedge_[a-z0-9_]* or winch_[a-z0-9_]* "
            "(lower snake case)"
        )
    tokens = set(name.split("_"))
    if tokens & _FOREIGN_TIME_UNITS:
        raise ValueError(f"metric name {name!r}: durations are in seconds (use _seconds)")
    if tokens & _TIME_WORDS and "seconds" not in tokens:
        raise ValueError(f"metric name {name!r} measures time: say _seconds in the name")
    is_total = name.endswith("_total")
    if kind == "counter" and not is_total:
        raise ValueError(f"counter name {name!r} must end in _total")
    if kind != "counter" and is_total:
        raise ValueError(f"{kind} name {name!r} must not end in _total (reserved for counters)")
    if kind == "histogram" and name.endswith(_RESERVED_SUFFIXES):
        raise ValueError(f"histogram name {name!r} must not end in _bucket, _sum or _count")


def _check_labelnames(name: str, labelnames: Sequence[str], kind: str) -> tuple[str, ...]:
    if isinstance(labelnames, str):
        raise ValueError(f"{name}: labelnames must be a sequence of names, not one string")
    names = tuple(labelnames)
    for label in names:
        if not _LABEL_RE.match(label) or label.startswith("__"):
            raise ValueError(f"{name}: invalid label name {label!r}")
        if kind == "histogram" and label == "le":
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: duplicate label names in {names}")
    return names


class CounterChild:
    """One counter series. `inc` is the hot path: one comparison and one add."""

    __slots__ = ("_labels", "_value")

    def __init__(self, labels: str) -> None:
        self._labels = labels
        self._value: float = 0

    def inc(self, n: float = 1) -> None:
        if n < 0:
            raise ValueError("a counter only goes up; use a gauge")
        self._value += n

    @property
    def value(self) -> float:
        return self._value


class GaugeChild:
    """One gauge series: set directly, or computed by a function at scrape time."""

    __slots__ = ("_fn", "_labels", "_value")

    def __init__(self, labels: str) -> None:
        self._labels = labels
        self._value: float = 0
        self._fn: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self._value = value

    def inc(self, n: float = 1) -> None:
        self._value += n

    def dec(self, n: float = 1) -> None:
        self._value -= n

    def set_function(self, fn: Callable[[], float]) -> None:
        """Read the value from `fn` at each scrape instead of storing it."""
        self._fn = fn

    @property
    def value(self) -> float:
        if self._fn is None:
            return self._value
        try:
            return self._fn()
        except Exception:
            # A broken callback must not fail the whole scrape; NaN keeps the series
            # visible and obviously wrong rather than reporting a stale number.
            return math.nan


class HistogramChild:
    """One histogram series: per-bucket counts (made cumulative at render) and a sum."""

    __slots__ = ("_bounds", "_counts", "_labels", "_sum")

    def __init__(self, labels: str, bounds: tuple[float, ...]) -> None:
        self._labels = labels
        self._bounds = bounds
        # One slot per finite upper bound plus the implicit +Inf bucket.
        self._counts = [0] * (len(bounds) + 1)
        self._sum: float = 0.0

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: buckets are "le" (inclusive).
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    @property
    def sum(self) -> float:
        return self._sum

    def cumulative_counts(self) -> list[int]:
        out: list[int] = []
        total = 0
        for c in self._counts:
            total += c
            out.append(total)
        return out


def _render_sample(out: list[str], name: str, pairs: str, value: float) -> None:
    labels = f"{{{pairs}}}" if pairs else ""
    out.append(f"{name}{labels} {_format_value(value)}\n")


_C = TypeVar("_C", CounterChild, GaugeChild, HistogramChild)


class _Family(Generic[_C]):
    """A metric name with its label names and one child per distinct label-value tuple."""

    kind: ClassVar[str]

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        _check_name(name, self.kind)
        self.name = name
        self.help = help
        self.labelnames = _check_labelnames(name, labelnames, self.kind)
        self._children: dict[tuple[str, ...], _C] = {}
        # An unlabelled metric has exactly one series, created now so it renders as 0.
        self._solo: _C | None = self.labels() if not self.labelnames else None

    def labels(self, *values: str) -> _C:
        child = self._children.get(values)
        if child is None:
            child = self._add_child(values)
        return child

    def remove(self, *values: str) -> None:
        """Forget one series (e.g. a backend removed by a reload)."""
        self._children.pop(values, None)

    def _add_child(self, values: tuple[str, ...]) -> _C:
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name}: expected {len(self.labelnames)} label values "
                f"{self.labelnames}, got {len(values)}"
            )
        for v in values:
            if not isinstance(v, str):
                raise TypeError(f"{self.name}: label values must be str, got {v!r}")
        pairs = ",".join(
            f'{n}="{_escape_label_value(v)}"' for n, v in zip(self.labelnames, values, strict=True)
        )
        child = self._make_child(pairs)
        self._children[values] = child
        return child

    def _make_child(self, pairs: str) -> _C:
        raise NotImplementedError

    def _only(self) -> _C:
        if self._solo is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: call labels() first")
        return self._solo

    def _render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {_escape_help(self.help)}\n")
        out.append(f"# TYPE {self.name} {self.kind}\n")
        # Sorted by label values so a scrape is stable whatever order traffic arrived in.
        for _, child in sorted(self._children.items()):
            self._render_child(out, child)

    def _render_child(self, out: list[str], child: _C) -> None:
        raise NotImplementedError


class Counter(_Family[CounterChild]):
    kind = "counter"

    def _make_child(self, pairs: str) -> CounterChild:
        return CounterChild(pairs)

    def _render_child(self, out: list[str], child: CounterChild) -> None:
        _render_sample(out, self.name, child._labels, child.value)

    def inc(self, n: float = 1) -> None:
        """Only for a counter without labels."""
        self._only().inc(n)


class Gauge(_Family[GaugeChild]):
    kind = "gauge"

    _collector: Callable[[], Iterable[tuple[tuple[str, ...], float]]] | None = None

    def _make_child(self, pairs: str) -> GaugeChild:
        return GaugeChild(pairs)

    def _render_child(self, out: list[str], child: GaugeChild) -> None:
        _render_sample(out, self.name, child._labels, child.value)

    # The methods below are for a gauge without labels.
    def set(self, value: float) -> None:
        self._only().set(value)

    def inc(self, n: float = 1) -> None:
        self._only().inc(n)

    def dec(self, n: float = 1) -> None:
        self._only().dec(n)

    def set_function(self, fn: Callable[[], float]) -> None:
        self._only().set_function(fn)

    def set_collector(self, fn: Callable[[], Iterable[tuple[tuple[str, ...], float]]]) -> None:
        """Compute every series at scrape time from `fn` (label values, value): for series
        that come and go with the state they describe (per-endpoint gauges)."""
        self._collector = fn

    def _render(self, out: list[str]) -> None:
        collector = self._collector
        if collector is None:
            super()._render(out)
            return
        out.append(f"# HELP {self.name} {_escape_help(self.help)}\n")
        out.append(f"# TYPE {self.name} {self.kind}\n")
        try:
            series = sorted(collector())
        except Exception:  # a broken collector must not fail the whole scrape
            series = []
        for values, value in series:
            pairs = ",".join(
                f'{n}="{_escape_label_value(v)}"'
                for n, v in zip(self.labelnames, values, strict=True)
            )
            _render_sample(out, self.name, pairs, value)


class Histogram(_Family[HistogramChild]):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str], buckets: Iterable[float]
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
            bounds.pop()  # +Inf is always implicit
        if not bounds:
            raise ValueError(f"{name}: a histogram needs at least one finite bucket")
        if any(math.isnan(b) or math.isinf(b) for b in bounds):
            raise ValueError(f"{name}: bucket bounds must be finite")
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"{name}: bucket bounds must be strictly increasing")
        self.buckets = tuple(bounds)
        self._le = [*(_format_value(b) for b in bounds), "+Inf"]
        super().__init__(name, help, labelnames)

    def _make_child(self, pairs: str) -> HistogramChild:
        return HistogramChild(pairs, self.buckets)

    def observe(self, value: float) -> None:
        """Only for a histogram without labels."""
        self._only().observe(value)

    def _render_child(self, out: list[str], child: HistogramChild) -> None:
        pairs = child._labels
        prefix = f"{self.name}_bucket{{{pairs}," if pairs else f"{self.name}_bucket{{"
        counts = child.cumulative_counts()
        for le, count in zip(self._le, counts, strict=True):
            out.append(f'{prefix}le="{le}"}} {count}\n')
        labels = f"{{{pairs}}}" if pairs else ""
        out.append(f"{self.name}_sum{labels} {_format_value(child.sum)}\n")
        out.append(f"{self.name}_count{labels} {counts[-1]}\n")


class MetricsRegistry:
    """The metrics of one edge instance, rendered together for /metrics."""

    def __init__(self) -> None:
        self._families: list[Counter | Gauge | Histogram] = []
        self._names: set[str] = set()

    def _register(self, family: Counter | Gauge | Histogram) -> None:
        produced = {family.name}
        if isinstance(family, Histogram):
            produced |= {family.name + s for s in _RESERVED_SUFFIXES}
        if produced & self._names:
            raise ValueError(f"metric {family.name!r} clashes with one already registered")
        self._names |= produced
        self._families.append(family)

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        family = Counter(name, help, labelnames)
        self._register(family)
        return family

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        family = Gauge(name, help, labelnames)
        self._register(family)
        return family

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DURATION_BUCKETS,
    ) -> Histogram:
        family = Histogram(name, help, labelnames, buckets)
        self._register(family)
        return family

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format 0.0.4."""
        out: list[str] = []
        for family in self._families:
            family._render(out)
        # "replace": a lone surrogate in a label value must not fail the whole scrape.
        return "".join(out).encode("utf-8", "replace")

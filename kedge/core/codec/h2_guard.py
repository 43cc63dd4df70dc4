"""Flood accounting for one HTTP/2 client connection (pure; the caller passes the time).

python-hyper h2 answers every PING and SETTINGS, accepts empty frames and resets without
end (hardening.md F3), so the edge keeps its own counts from `FrameCounts` and ends a
connection that crosses a threshold with GOAWAY, as Envoy, nginx and HAProxy do. Each
kind has its own budget per `window` seconds, so one abusive connection is cut while
well-behaved ones never notice.

Counts use two fixed buckets, the current and the previous window, and estimate the
sliding count as `previous * (share of the previous window still inside the sliding one)
+ current`: a constant-memory approximation (the one Cloudflare and nginx's limit_req
family use) that cannot be gamed by bursting at a bucket boundary by more than the
interpolation error.
"""

from __future__ import annotations

from dataclasses import dataclass

from kedge.core.codec.h2_frames import FrameCounts

__all__ = ["FloodGuard", "FloodLimits", "FloodVerdict"]

ENHANCE_YOUR_CALM = 0xB  # RFC 9113 §7
_DATA_PER_WINDOW_UPDATE = 16384  # a peer may fairly send one WINDOW_UPDATE per 16 KiB read


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """Thresholds per connection and window; 0 turns a check off."""

    window: float = 10.0  # seconds over which the counts accumulate
    max_pings: int = 100  # PING frames (CVE-2019-9512)
    max_settings: int = 100  # SETTINGS frames (CVE-2019-9515)
    max_window_updates: int = 1000  # WINDOW_UPDATE frames beyond what DATA sent explains
    max_priority: int = 1000  # PRIORITY frames (CVE-2019-9513)
    max_empty_frames: int = 100  # DATA/HEADERS/CONTINUATION without payload or END flag
    max_resets: int = 200  # client RST_STREAM frames (rapid reset, CVE-2023-44487)
    max_server_resets: int = 100  # streams the edge had to reset (MadeYouReset)
    max_new_streams_per_read: int = 200  # more in one read are refused (REFUSED_STREAM)


@dataclass(frozen=True, slots=True)
class FloodVerdict:
    error_code: int  # for the GOAWAY
    kind: str  # stable: the `kind` label of kedge_http2_connections_closed_total
    reason: str  # one line, for the log and the GOAWAY debug data


# (counter index, limit field, verdict kind, what)
_CHECKS = (
    (0, "max_pings", "ping-flood", "PING frames"),
    (1, "max_settings", "settings-flood", "SETTINGS frames"),
    (2, "max_window_updates", "window-update-flood", "unexplained WINDOW_UPDATE frames"),
    (3, "max_priority", "priority-flood", "PRIORITY frames"),
    (4, "max_empty_frames", "empty-frame-flood", "empty frames"),
    (5, "max_resets", "rapid-reset", "stream resets"),
    (6, "max_server_resets", "server-reset-flood", "streams reset by the edge"),
)
_NAMES = ("pings", "settings", "window_updates", "priority", "empty", "resets", "server_resets")


class FloodGuard:
    __slots__ = ("_credit", "_current", "_limits", "_previous", "_start")

    def __init__(self, limits: FloodLimits) -> None:
        self._limits = limits
        self._start: float | None = None
        self._current = [0] * len(_NAMES)
        self._previous = [0] * len(_NAMES)
        self._credit = 0  # WINDOW_UPDATEs the DATA we sent entitles the client to

    def _roll(self, now: float) -> float:
        """Advance the buckets to `now`; the previous bucket's weight in the estimate."""
        window = self._limits.window
        if self._start is None:
            self._start = now
        elapsed = now - self._start
        if elapsed >= window:
            periods = int(elapsed // window)
            self._previous = self._current if periods == 1 else [0] * len(_NAMES)
            self._current = [0] * len(_NAMES)
            self._start += periods * window
            elapsed = now - self._start
        return max(0.0, 1.0 - elapsed / window)

    def observe(
        self, counts: FrameCounts, now: float, *, server_resets: int = 0, data_sent: int = 0
    ) -> FloodVerdict | None:
        """Add one read's frames (and the resets h2 queued in reply); a verdict if the
        connection crossed a threshold."""
        weight = self._roll(now)
        cur = self._current
        self._credit += data_sent // _DATA_PER_WINDOW_UPDATE + (1 if data_sent else 0)
        updates = counts.window_update
        if updates and self._credit:
            covered = min(updates, self._credit)
            self._credit -= covered
            updates -= covered
        cur[0] += counts.ping
        cur[1] += counts.settings
        cur[2] += updates
        cur[3] += counts.priority
        cur[4] += counts.empty
        cur[5] += counts.rst_stream
        cur[6] += server_resets
        limits = self._limits
        prev = self._previous
        for index, field, kind, what in _CHECKS:
            limit: int = getattr(limits, field)
            if limit and cur[index] and prev[index] * weight + cur[index] > limit:
                return FloodVerdict(
                    ENHANCE_YOUR_CALM,
                    kind,
                    f"more than {limit} {what} in {limits.window:g}s",
                )
        return None

    def refused_in_read(self, counts: FrameCounts) -> int:
        """How many of this read's new streams exceed the per-read budget (nginx refuses
        streams beyond twice its concurrency per read the same way)."""
        limit = self._limits.max_new_streams_per_read
        if not limit or counts.new_streams <= limit:
            return 0
        return counts.new_streams - limit

    def snapshot(self) -> dict[str, int]:
        return dict(zip(_NAMES, self._current, strict=True))

"""Flood accounting for one HTTP/2 client connection (pure; the caller passes the time).

python-hyper h2 answers every PING and SETTINGS and accepts empty frames and endless resets
(hardening.md F3), so the edge keeps its own counts from the frames it reads (`h2_frames`)
and ends a connection that crosses a threshold with GOAWAY(ENHANCE_YOUR_CALM), as Envoy,
nginx and HAProxy do (RFC 9113 §10.5). Each kind has its own budget per `window` seconds, so
one abusive connection is cut while well-behaved ones never notice.

Sliding window, two buckets: counts go into the current fixed bucket of `window` seconds;
the previous bucket is kept, and the count over the last `window` seconds is estimated as
`previous * (share of the previous bucket still inside the sliding window) + current`.
Constant memory, no per-frame timestamps; the estimate assumes the previous bucket's frames
were spread evenly, so a burst timed at a bucket boundary gets through at most about one
extra budget, once. A connection idle for two windows starts from zero.

Per kind:
- PING / SETTINGS (non-ACK), PRIORITY: every frame counts (CVE-2019-9512/9515/9513).
- WINDOW_UPDATE: only updates the DATA the edge sent does not explain. Each started 16 KiB
  of DATA sent earns two (one for the stream, one for the connection, which is what a peer
  acknowledging each frame sends); unused credit lapses after one window so a long download
  cannot bank an allowance for a later flood. Envoy's rule has the same shape.
- Empty frames (CVE-2019-9518): a count per window. Envoy allows one *consecutive* empty
  frame; a count tolerates the odd empty frame of a sloppy client among many good ones and
  still ends a flood within `max_empty_frames`.
- Rapid reset (CVE-2023-44487): RST_STREAM frames from the client.
- Server resets (MadeYouReset, CVE-2025-8671): RST_STREAMs h2 queued in reply to a read,
  i.e. stream errors the client provoked; counted apart so each has its own budget.
Burst of new streams in one read: `refused_in_read` (nginx refuses streams beyond twice its
concurrency per read with REFUSED_STREAM; the connection stays up).
"""

from __future__ import annotations

from dataclasses import dataclass

from kedge.core.codec.h2_frames import FrameCounts

__all__ = ["ENHANCE_YOUR_CALM", "FloodGuard", "FloodLimits", "FloodVerdict"]

ENHANCE_YOUR_CALM = 0xB  # RFC 9113 §7: the peer "might be generating excessive load"
_DATA_PER_CREDIT = 16384  # the default SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2)
_UPDATES_PER_CREDIT = 2  # a stream and a connection WINDOW_UPDATE (RFC 9113 §6.9)
_LIMIT_FIELDS = (
    "max_pings",
    "max_settings",
    "max_window_updates",
    "max_priority",
    "max_empty_frames",
    "max_resets",
    "max_server_resets",
    "max_new_streams_per_read",
)


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """Abuse thresholds per client connection (the `http2.floods` config section).
    Counts are per `window` seconds; 0 turns a check off."""

    window: float = 10.0  # seconds over which the counts accumulate
    max_pings: int = 100  # PING frames (CVE-2019-9512)
    max_settings: int = 100  # SETTINGS frames (CVE-2019-9515)
    max_window_updates: int = 1000  # WINDOW_UPDATE frames beyond what DATA sent explains
    max_priority: int = 1000  # PRIORITY frames (CVE-2019-9513)
    max_empty_frames: int = 100  # DATA/HEADERS/CONTINUATION without payload or END flag
    max_resets: int = 200  # client RST_STREAM frames (rapid reset, CVE-2023-44487)
    max_server_resets: int = 100  # streams the edge had to reset (MadeYouReset)
    max_new_streams_per_read: int = 200  # more in one read are refused (REFUSED_STREAM)

    def __post_init__(self) -> None:
        # The config parser names the key; this keeps a hand-built value from dividing by 0.
        if not self.window > 0:
            raise ValueError(f"FloodLimits.window must be > 0 seconds, not {self.window!r}")
        for name in _LIMIT_FIELDS:
            if getattr(self, name) < 0:
                raise ValueError(f"FloodLimits.{name} must be >= 0 (0 turns it off)")


@dataclass(frozen=True, slots=True)
class FloodVerdict:
    """Why a connection must end: send GOAWAY(error_code) with `reason` as debug data."""

    error_code: int  # ENHANCE_YOUR_CALM for every flood
    kind: str  # stable: the `kind` label of kedge_http2_connections_closed_total
    reason: str  # one line, for the log and the GOAWAY debug data


# Counter index -> (snapshot name, verdict kind, what is counted). Order matches _limits.
_NAMES = ("pings", "settings", "window_updates", "priority", "empty", "resets", "server_resets")
_KINDS = (
    ("ping-flood", "PING frames"),
    ("settings-flood", "SETTINGS frames"),
    ("window-update-flood", "WINDOW_UPDATE frames not explained by DATA sent"),
    ("priority-flood", "PRIORITY frames"),
    ("empty-frame-flood", "frames with an empty payload"),
    ("rapid-reset", "RST_STREAM frames from the client"),
    ("server-reset-flood", "streams reset by the edge"),
)
_PING, _SETTINGS, _WINDOW_UPDATE, _PRIORITY, _EMPTY, _RESET, _SERVER_RESET = range(7)


class FloodGuard:
    """The counts of one connection; `observe` once per read."""

    __slots__ = (
        "_bucket_end",
        "_credit",
        "_current",
        "_earned",
        "_last_now",
        "_limits",
        "_maxima",
        "_previous",
        "_window",
    )

    def __init__(self, limits: FloodLimits) -> None:
        self._limits = limits
        self._window = limits.window
        self._maxima = (
            limits.max_pings,
            limits.max_settings,
            limits.max_window_updates,
            limits.max_priority,
            limits.max_empty_frames,
            limits.max_resets,
            limits.max_server_resets,
        )
        self._bucket_end: float | None = None  # set by the first observe
        self._current = [0] * len(_NAMES)
        self._previous = [0] * len(_NAMES)
        self._credit = 0  # WINDOW_UPDATEs the DATA sent still explains
        self._earned = 0  # credit earned in the current bucket
        self._last_now = 0.0

    def observe(
        self, counts: FrameCounts, now: float, *, server_resets: int = 0, data_sent: int = 0
    ) -> FloodVerdict | None:
        """Add one read's frames, the RST_STREAMs h2 queued in reply to it
        (`server_resets`) and the DATA bytes the edge sent since the last call; a verdict
        if the connection crossed a threshold."""
        if self._bucket_end is None or now >= self._bucket_end:
            self._roll(now)
        self._last_now = now
        if data_sent:
            earned = -(-data_sent // _DATA_PER_CREDIT) * _UPDATES_PER_CREDIT
            self._credit += earned
            self._earned += earned
        verdict = None
        if counts.window_update:
            updates = counts.window_update
            if self._credit:
                covered = min(updates, self._credit)
                self._credit -= covered
                updates -= covered
            if updates:
                verdict = self._add(_WINDOW_UPDATE, updates, now)
        # The common read (HEADERS, DATA) adds to none of these.
        if counts.ping:
            verdict = verdict or self._add(_PING, counts.ping, now)
        if counts.settings:
            verdict = verdict or self._add(_SETTINGS, counts.settings, now)
        if counts.priority:
            verdict = verdict or self._add(_PRIORITY, counts.priority, now)
        if counts.empty:
            verdict = verdict or self._add(_EMPTY, counts.empty, now)
        if counts.rst_stream:
            verdict = verdict or self._add(_RESET, counts.rst_stream, now)
        if server_resets:
            verdict = verdict or self._add(_SERVER_RESET, server_resets, now)
        return verdict

    def refused_in_read(self, counts: FrameCounts) -> int:
        """How many of this read's new streams exceed `max_new_streams_per_read` (the
        caller refuses the last ones with REFUSED_STREAM, safe to retry: RFC 9113 §8.7)."""
        limit = self._limits.max_new_streams_per_read
        if not limit or counts.new_streams <= limit:
            return 0
        return counts.new_streams - limit

    def snapshot(self) -> dict[str, int]:
        """The estimated counts over the sliding window as of the last `observe` (rounded
        down), and the WINDOW_UPDATE credit left; for debugging."""
        weight = self._previous_weight(self._last_now)
        result = {
            name: int(previous * weight + current)
            for name, previous, current in zip(_NAMES, self._previous, self._current, strict=True)
        }
        result["window_update_credit"] = self._credit
        return result

    def _add(self, index: int, amount: int, now: float) -> FloodVerdict | None:
        self._current[index] += amount
        limit = self._maxima[index]
        if not limit:
            return None
        count = self._previous[index] * self._previous_weight(now) + self._current[index]
        if count <= limit:
            return None
        kind, what = _KINDS[index]
        return FloodVerdict(
            ENHANCE_YOUR_CALM,
            kind,
            f"{int(count)} {what} in {self._window:g}s (limit {limit})",
        )

    def _roll(self, now: float) -> None:
        """Start the bucket holding `now`; the one before it becomes `previous` only if it
        is the bucket that just ended."""
        window = self._window
        if self._bucket_end is None:
            self._bucket_end = now + window
            return
        ended = int((now - self._bucket_end) // window) + 1  # buckets that ended by `now`
        if ended == 1:
            self._previous = self._current
            # Credit lapses after one window: keep at most what the ending bucket earned.
            self._credit = min(self._credit, self._earned)
        else:
            self._previous = [0] * len(_NAMES)
            self._credit = 0
        self._current = [0] * len(_NAMES)
        self._earned = 0
        self._bucket_end += ended * window

    def _previous_weight(self, now: float) -> float:
        """Share of the previous bucket still inside the window ending at `now`."""
        if self._bucket_end is None:
            return 0.0
        into_current = now - (self._bucket_end - self._window)
        return min(1.0, max(0.0, 1.0 - into_current / self._window))

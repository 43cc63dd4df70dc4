"""The `http2:` section: SETTINGS the edge advertises to clients and its flood thresholds."""

from __future__ import annotations

from kedge.core.config_loading import Node, dataclass_keys
from kedge.edge.config import Http2Config, Http2FloodLimits

__all__ = ["parse_http2"]

# RFC 9113 §6.5.2: SETTINGS_MAX_FRAME_SIZE lies in [2^14, 2^24 - 1]; window sizes are at
# most 2^31 - 1 (§6.9.1).
_MIN_FRAME, _MAX_FRAME = 16384, 16777215
_MAX_WINDOW = 2**31 - 1


def parse_http2(node: Node | None, d: Http2Config) -> Http2Config:
    if node is None:
        return d
    f = node.as_mapping(dataclass_keys(Http2Config))
    frame = f.get_size("max_frame_size", d.max_frame_size, allow_zero=False)
    if not _MIN_FRAME <= frame <= _MAX_FRAME:
        raise node.child("max_frame_size").error(
            f"max_frame_size {frame} is outside what HTTP/2 allows",
            f"use a value from {_MIN_FRAME} to {_MAX_FRAME} bytes (RFC 9113 §6.5.2)",
        )
    windows = {}
    for key in ("initial_stream_window", "initial_connection_window"):
        value = f.get_size(key, getattr(d, key), allow_zero=False)
        if value > _MAX_WINDOW:
            raise node.child(key).error(
                f"{key} {value} is larger than HTTP/2 allows",
                f"use at most {_MAX_WINDOW} bytes (RFC 9113 §6.9.1)",
            )
        windows[key] = value
    if windows["initial_connection_window"] < 65535:
        raise node.child("initial_connection_window").error(
            "initial_connection_window is below the protocol's initial 65535 bytes",
            "use 65535 or more (the connection window can only be raised)",
        )
    floods = d.floods
    if (fn := f.get("floods")) is not None:
        floods = _floods(fn, d.floods)
    return Http2Config(
        enabled=f.get_bool("enabled", d.enabled),
        max_concurrent_streams=f.get_int(
            "max_concurrent_streams", d.max_concurrent_streams, minimum=1
        ),
        initial_stream_window=windows["initial_stream_window"],
        initial_connection_window=windows["initial_connection_window"],
        max_header_list_size=f.get_size(
            "max_header_list_size", d.max_header_list_size, allow_zero=False
        ),
        max_frame_size=frame,
        idle_timeout=f.get_duration("idle_timeout", d.idle_timeout, allow_zero=False),
        settings_timeout=f.get_duration("settings_timeout", d.settings_timeout, allow_zero=False),
        floods=floods,
    )


def _floods(node: Node, d: Http2FloodLimits) -> Http2FloodLimits:
    f = node.as_mapping(dataclass_keys(Http2FloodLimits))
    counts = {
        key: f.get_int(key, getattr(d, key), minimum=0)
        for key in dataclass_keys(Http2FloodLimits)
        if key != "window"
    }
    return Http2FloodLimits(window=f.get_duration("window", d.window, allow_zero=False), **counts)

"""Tests for the access log: line format, buffering, flushing and never raising."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kedge.edge.observability.access_log import AccessLog, format_rfc3339_millis

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class FakeClock:
    def __init__(self, *times: float) -> None:
        self._times: Iterator[float] = iter(times)
        self.last = T0

    def __call__(self) -> float:
        self.last = next(self._times, self.last)
        return self.last


class CountingStream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


class BrokenStream(io.BytesIO):
    def write(self, data: Any) -> int:
        raise OSError(28, "No space left on device")


def _request(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "client": "127.0.0.1:50000",
        "listener": "web",
        "method": "GET",
        "authority": "api.test",
        "path": "/v1/items?x=1",
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 512,
        "duration_ms": 1.23456,
        "route": "api",
        "backend": "api-pool",
        "endpoint": "10.0.0.7:8080",
        "error_kind": None,
    }
    fields.update(overrides)
    return fields


def _lines(stream: io.BytesIO) -> list[dict[str, Any]]:
    data = stream.getvalue()
    assert data.endswith(b"\n")
    return [orjson.loads(line) for line in data.split(b"\n")[:-1]]


def test_record_writes_one_json_line_with_every_key_in_order() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, FakeClock(T0 + 0.1239))
    log.record(**_request())
    log.flush()
    assert stream.getvalue() == (
        b'{"time":"2023-11-14T22:13:20.123Z","request_id":"req-1","client":"127.0.0.1:50000",'
        b'"listener":"web","method":"GET","authority":"api.test","path":"/v1/items?x=1",'
        b'"status":200,"bytes_in":0,"bytes_out":512,"duration_ms":1.235,"route":"api",'
        b'"backend":"api-pool","endpoint":"10.0.0.7:8080","error_kind":null,"principal":null}\n'
    )


def test_unrouted_request_logs_nulls() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, FakeClock())
    log.record(**_request(route=None, backend=None, endpoint=None, error_kind="no-route"))
    log.flush()
    [line] = _lines(stream)
    assert (line["route"], line["backend"], line["endpoint"]) == (None, None, None)
    assert line["error_kind"] == "no-route"


@pytest.mark.parametrize(
    ("duration_ms", "logged"),
    [
        (1.23456, 1.235),
        (0.0004, 0.0),
        (0.0005, 0.001),
        (2.0, 2.0),
        (12.3, 12.3),
        (59999.9999, 60000.0),
    ],
)
def test_duration_has_three_decimals(duration_ms: float, logged: float) -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, FakeClock())
    log.record(**_request(duration_ms=duration_ms))
    log.flush()
    assert _lines(stream)[0]["duration_ms"] == logged
    assert f'"duration_ms":{logged!r},'.encode() in stream.getvalue()


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (T0, "2023-11-14T22:13:20.000Z"),
        (T0 + 0.9999, "2023-11-14T22:13:20.999Z"),  # truncated, never rounded into the next second
        (T0 + 1.0625, "2023-11-14T22:13:21.062Z"),
        (951782400.5, "2000-02-29T00:00:00.500Z"),
        (0.9999999, "1970-01-01T00:00:00.999Z"),
    ],
)
def test_rfc3339_millis(timestamp: float, text: str) -> None:
    assert format_rfc3339_millis(timestamp) == text


def test_timestamps_follow_the_clock_across_seconds() -> None:
    stream = io.BytesIO()
    times = (T0 + 0.5001, T0 + 0.5009, T0 + 0.5015, T0 + 0.75, T0 + 1.25, T0 + 61.0)
    log = AccessLog(stream, FakeClock(*times))
    for _ in range(len(times)):
        log.record(**_request())
    log.flush()
    assert [line["time"] for line in _lines(stream)] == [
        "2023-11-14T22:13:20.500Z",
        "2023-11-14T22:13:20.500Z",  # same millisecond: the cached stamp
        "2023-11-14T22:13:20.501Z",
        "2023-11-14T22:13:20.750Z",
        "2023-11-14T22:13:21.250Z",
        "2023-11-14T22:14:21.000Z",
    ]


def test_nothing_is_written_until_flush() -> None:
    stream = CountingStream()
    log = AccessLog(stream, FakeClock())
    for _ in range(100):
        log.record(**_request())
    assert stream.writes == 0
    assert log.buffered_bytes > 0
    log.flush()
    assert stream.writes == 1
    assert log.buffered_bytes == 0
    assert len(_lines(stream)) == 100
    log.flush()  # nothing buffered: no write
    assert stream.writes == 1


def test_buffer_past_the_limit_is_flushed_by_record() -> None:
    stream = CountingStream()
    log = AccessLog(stream, FakeClock(), buffer_limit=1000)
    count = 0
    while stream.writes == 0:
        log.record(**_request())
        count += 1
        assert count < 100
    assert 1000 < len(stream.getvalue()) < 1400  # flushed as soon as it passed the limit
    assert log.buffered_bytes == 0
    assert len(_lines(stream)) == count


def test_default_limit_is_64_kib() -> None:
    stream = CountingStream()
    log = AccessLog(stream, FakeClock())
    while stream.writes == 0:
        log.record(**_request())
    assert 64 * 1024 < len(stream.getvalue()) < 64 * 1024 + 1024


def test_no_stream_means_no_logging() -> None:
    log = AccessLog(None, FakeClock())
    log.record(**_request())
    log.log_event("info", "started")
    log.flush()
    assert not log.enabled
    assert log.buffered_bytes == 0


def test_broken_stream_disables_logging_with_one_message() -> None:
    errors = io.StringIO()
    log = AccessLog(BrokenStream(), FakeClock(), buffer_limit=500, error_stream=errors)
    for _ in range(50):  # crosses the limit many times; must never raise
        log.record(**_request())
        log.log_event("error", "boom")
        log.flush()
    assert not log.enabled
    assert log.buffered_bytes == 0
    [message] = errors.getvalue().splitlines()
    parsed = orjson.loads(message)
    assert parsed["level"] == "error"
    assert "access log disabled" in parsed["message"]
    assert "No space left on device" in parsed["error"]


def test_closed_stream_disables_logging() -> None:
    stream = io.BytesIO()
    stream.close()
    errors = io.StringIO()
    log = AccessLog(stream, FakeClock(), error_stream=errors)
    log.record(**_request())
    log.flush()
    assert not log.enabled
    assert len(errors.getvalue().splitlines()) == 1


def test_partial_writes_are_completed() -> None:
    class Trickle(io.BytesIO):
        def write(self, data: Any) -> int:
            return super().write(bytes(data[:7]))

    stream = Trickle()
    log = AccessLog(stream, FakeClock())
    log.record(**_request())
    log.record(**_request(request_id="req-2"))
    log.flush()
    assert [line["request_id"] for line in _lines(stream)] == ["req-1", "req-2"]


def test_stream_that_accepts_nothing_disables_logging() -> None:
    class Stuck(io.BytesIO):
        def write(self, data: Any) -> int:
            return 0

    errors = io.StringIO()
    log = AccessLog(Stuck(), FakeClock(), error_stream=errors)
    log.record(**_request())
    log.flush()  # must return instead of spinning
    assert not log.enabled
    assert "BlockingIOError" in errors.getvalue()


def test_lone_surrogates_from_the_client_are_escaped_not_fatal() -> None:
    stream = io.BytesIO()
    errors = io.StringIO()
    log = AccessLog(stream, FakeClock(), error_stream=errors)
    log.record(**_request(path="/bad\udcff", authority="x\ud800.test"))
    log.record(**_request(request_id="req-2"))
    log.flush()
    first, second = _lines(stream)
    assert first["path"] == "/bad\\udcff"
    assert first["authority"] == "x\\ud800.test"
    assert first["status"] == 200
    assert first["duration_ms"] == 1.235
    assert second["request_id"] == "req-2"
    assert errors.getvalue() == ""


def test_broken_clock_keeps_lines_without_time_and_says_so_once() -> None:
    def clock() -> float:
        raise RuntimeError("clock gone")

    stream = io.BytesIO()
    errors = io.StringIO()
    log = AccessLog(stream, clock, error_stream=errors)
    for _ in range(3):
        log.record(**_request())
    log.log_event("info", "still here")
    log.flush()
    lines = _lines(stream)
    assert [line["time"] for line in lines] == [None] * 4
    assert lines[0]["request_id"] == "req-1"
    assert len(errors.getvalue().splitlines()) == 1
    assert "clock gone" in errors.getvalue()


def test_non_finite_duration_is_null_not_fatal() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, FakeClock())
    log.record(**_request(duration_ms=float("nan")))
    log.record(**_request(duration_ms=float("inf")))
    log.flush()
    assert [line["duration_ms"] for line in _lines(stream)] == [None, None]


@given(path=st.text(), authority=st.text(), method=st.text(max_size=10))
def test_any_text_round_trips_as_one_line(path: str, authority: str, method: str) -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, FakeClock())
    log.record(**_request(path=path, authority=authority, method=method))
    log.flush()
    [line] = _lines(stream)  # newlines inside values are escaped: still exactly one line
    assert (line["path"], line["authority"], line["method"]) == (path, authority, method)


def test_log_event_fields_and_request_id() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, FakeClock(T0 + 0.25))
    log.log_event("info", "config reloaded", generation=4, routes=["a", "b"])
    log.log_event("error", "upstream failed", request_id="req-9", error=ValueError("bad"))
    log.log_event("warning", "fields cannot override", time="never", extra=None)
    log.flush()
    first, second, third = _lines(stream)
    assert first == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "info",
        "message": "config reloaded",
        "generation": 4,
        "routes": ["a", "b"],
    }
    assert "request_id" not in first
    assert second["request_id"] == "req-9"
    assert second["error"] == "bad"  # not a JSON type: written as str()
    assert third["time"] == "2023-11-14T22:13:20.250Z"
    assert third["extra"] is None


def test_events_and_requests_share_the_buffer_in_order() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, FakeClock())
    log.log_event("info", "started")
    log.record(**_request())
    log.log_event("info", "stopping")
    log.flush()
    assert [line.get("message", line.get("request_id")) for line in _lines(stream)] == [
        "started",
        "req-1",
        "stopping",
    ]

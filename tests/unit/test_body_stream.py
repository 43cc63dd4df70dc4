"""BodyStream: ordering, backpressure thresholds, end of stream and errors."""

from __future__ import annotations

import asyncio

import pytest

from kedge.core.errors import BodyTooLarge
from kedge.core.http.body import BodyStream


async def test_reads_in_order_and_ends() -> None:
    b = BodyStream()
    b.feed(b"a")
    b.feed(b"b")
    assert await b.read() == b"ab"
    b.feed_eof([(b"x-t", b"1")])
    assert await b.read() == b""
    assert b.trailers == [(b"x-t", b"1")]
    assert b.is_complete and b.at_eof and b.total == 2


async def test_reader_waits_for_data() -> None:
    b = BodyStream()
    task = asyncio.create_task(b.read())
    await asyncio.sleep(0)
    assert not task.done()
    b.feed(b"late")
    assert await task == b"late"


async def test_pause_above_high_water_resume_below_low_water() -> None:
    events: list[str] = []
    b = BodyStream(lambda: events.append("pause"), lambda: events.append("resume"), high_water=100)
    b.feed(b"x" * 60)
    assert events == []
    b.feed(b"x" * 60)
    assert events == ["pause"]
    b.feed(b"x" * 60)
    assert events == ["pause"]  # paused once, not per chunk
    assert len(await b.read()) == 180
    assert events == ["pause", "resume"]


async def test_error_is_raised_to_reader_and_drops_buffer() -> None:
    b = BodyStream()
    b.feed(b"partial")
    b.feed_error(BodyTooLarge("too big"))
    with pytest.raises(BodyTooLarge):
        await b.read()
    assert not b.is_complete


async def test_first_read_hook_runs_once() -> None:
    calls: list[int] = []
    b = BodyStream()
    b.on_first_read = lambda: calls.append(1)
    b.feed(b"x")
    b.feed_eof()
    assert b.take_all() == b"x"
    assert await b.read() == b""
    assert calls == [1]

"""HTTP/2 floods over raw frames: each attack ends in GOAWAY on its own connection only.

The attacker writes frames built with hyperframe (python-hyper h2 would refuse to build
most of them); a well-behaved client on another connection is served throughout.
Thresholds are lowered in the config so each test stays small; the defaults are checked
by the unit tests of the guard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.backend import RecordingBackend, recording_backend
from tests.support.edge import RunningEdge, running_edge
from tests.support.h2_client import H2TestClient, StreamResult, get_headers
from tests.support.ops_client import admin_get, metric_value

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM, PROTOCOL_ERROR = 0xB, 0x1


def edge_yaml(backend: str) -> str:
    return f"""
listeners:
  - name: http
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
timeouts:
  request_header: 1s
http2:
  floods:
    max_pings: 50
    max_settings: 20
    max_window_updates: 50
    max_priority: 50
    max_empty_frames: 20
    max_resets: 50
    max_server_resets: 20
backends:
  - name: app
    resolver: {{static: {{endpoints: ["{backend}"]}}}}
routes:
  - backend: app
    match: {{host: edge.test}}
"""


@pytest.fixture
async def setup() -> AsyncIterator[tuple[RunningEdge, RecordingBackend]]:
    async with recording_backend() as be, running_edge(edge_yaml(be.address)) as edge:
        yield edge, be


class Attacker:
    """A raw HTTP/2 connection: frames out, GOAWAY (if any) in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = Encoder()

    @classmethod
    async def connect(cls, port: int) -> Attacker:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PREFACE + SettingsFrame(0).serialize())
        return cls(reader, writer)

    def send(self, *frames: Frame) -> None:
        if not self.writer.is_closing():
            self.writer.write(b"".join(f.serialize() for f in frames))

    def headers(self, sid: int, *, end_stream: bool = True, end_headers: bool = True) -> Frame:
        block = self.encoder.encode(get_headers(b"edge.test", b"/x"))
        flags = {"END_STREAM"} if end_stream else set()
        if end_headers:
            flags.add("END_HEADERS")
        return HeadersFrame(sid, block, flags=flags)

    async def goaway(self, timeout: float = 5.0) -> GoAwayFrame | None:
        """Read until GOAWAY or EOF; the GOAWAY frame, or None if the socket just closed."""
        buffer = b""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionError:
                    return None
                if not chunk:
                    return None
                buffer += chunk
                while len(buffer) >= 9:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < 9 + length:
                        break
                    frame, _ = Frame.parse_frame_header(memoryview(buffer[:9]))
                    frame.parse_body(memoryview(buffer[9 : 9 + length]))
                    buffer = buffer[9 + length :]
                    if isinstance(frame, GoAwayFrame):
                        return frame

    def close(self) -> None:
        self.writer.close()


async def _bystander_ok(edge: RunningEdge) -> float:
    """A well-behaved client's request; its latency in seconds."""
    client = await H2TestClient.connect(edge.port())
    try:
        start = time.monotonic()
        result = await client.wait(client.request(get_headers(b"edge.test", b"/ok")))
        assert result.status == 200
        return time.monotonic() - start
    finally:
        await client.aclose()


async def _closed_count(edge: RunningEdge, kind: str) -> float:
    assert edge.app.admin is not None
    _, text = await admin_get(edge.app.admin.bound_port, "/metrics")
    value = metric_value(
        text.decode(), "kedge_http2_connections_closed_total", listener="http", kind=kind
    )
    return value or 0.0


def _ping_flood(a: Attacker) -> None:
    a.send(*(PingFrame(0, opaque_data=i.to_bytes(8, "big")) for i in range(200)))


def _settings_flood(a: Attacker) -> None:
    a.send(*(SettingsFrame(0, settings={0x3: 100}) for _ in range(100)))


def _rapid_reset(a: Attacker) -> None:
    frames: list[Frame] = []
    for i in range(200):
        sid = 1 + 2 * i
        frames += [a.headers(sid), RstStreamFrame(sid, error_code=8)]
    a.send(*frames)


def _empty_data(a: Attacker) -> None:
    a.send(a.headers(1, end_stream=False), *(DataFrame(1, b"") for _ in range(100)))


def _window_updates(a: Attacker) -> None:
    a.send(*(WindowUpdateFrame(0, window_increment=1) for _ in range(200)))


def _priority(a: Attacker) -> None:
    a.send(*(PriorityFrame(1 + 2 * i, depends_on=0, stream_weight=16) for i in range(200)))


def _made_you_reset(a: Attacker) -> None:
    # DATA on a stream the client already half-closed: a stream error the server must
    # answer with RST_STREAM(STREAM_CLOSED) (RFC 9113 §5.1), so the client makes the
    # server reset streams without sending a single RST_STREAM itself.
    frames: list[Frame] = []
    for i in range(100):
        sid = 1 + 2 * i
        frames += [a.headers(sid), DataFrame(sid, b"x")]
    a.send(*frames)


FLOODS = [
    ("ping-flood", _ping_flood),
    ("settings-flood", _settings_flood),
    ("rapid-reset", _rapid_reset),
    ("empty-frame-flood", _empty_data),
    ("window-update-flood", _window_updates),
    ("priority-flood", _priority),
    ("server-reset-flood", _made_you_reset),
]


@pytest.mark.parametrize(("kind", "attack"), FLOODS, ids=[k for k, _ in FLOODS])
async def test_flood_ends_in_goaway_and_spares_others(
    setup: tuple[RunningEdge, RecordingBackend], kind: str, attack: object
) -> None:
    edge, _ = setup
    a = await Attacker.connect(edge.port())
    try:
        assert callable(attack)
        attack(a)
        frame = await a.goaway()
        assert frame is not None, kind
        assert frame.error_code == ENHANCE_YOUR_CALM
        assert await _closed_count(edge, kind) == 1
        assert await _bystander_ok(edge) < 1.0
    finally:
        a.close()


async def test_unfinished_header_block_times_out(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    edge, be = setup
    a = await Attacker.connect(edge.port())
    try:
        started = time.monotonic()
        a.send(a.headers(1, end_headers=False))  # never followed by END_HEADERS
        frame = await a.goaway(timeout=5)
        assert frame is not None and frame.error_code == PROTOCOL_ERROR
        assert 0.9 <= time.monotonic() - started < 3.0  # timeouts.request_header is 1s
        assert await _closed_count(edge, "header-timeout") == 1
        assert be.requests == []
    finally:
        a.close()


async def test_continuation_flood_is_cut(setup: tuple[RunningEdge, RecordingBackend]) -> None:
    edge, be = setup
    a = await Attacker.connect(edge.port())
    try:
        a.send(
            a.headers(1, end_headers=False),
            *(ContinuationFrame(1, b"") for _ in range(100)),
        )
        frame = await a.goaway()
        assert frame is not None and frame.error_code in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)
        assert be.requests == []
    finally:
        a.close()


async def test_hpack_bomb_is_refused(setup: tuple[RunningEdge, RecordingBackend]) -> None:
    edge, be = setup
    a = await Attacker.connect(edge.port())
    try:
        # One 4000-byte value enters the dynamic table, then ~1000 one-byte references to
        # it claim about 4 MB of decoded headers (CVE-2016-6581).
        big = [(b"x-bomb", b"a" * 4000)]
        first = a.encoder.encode(get_headers(b"edge.test", b"/x") + big)
        a.send(HeadersFrame(1, first, flags={"END_HEADERS", "END_STREAM"}))
        block = a.encoder.encode(get_headers(b"edge.test", b"/x") + big * 1000)
        assert len(block) < 8192  # claims 4 MB decoded
        a.send(HeadersFrame(3, block, flags={"END_HEADERS", "END_STREAM"}))
        frame = await a.goaway()
        assert frame is not None and frame.error_code in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)
        assert all(r.header("x-bomb") is None or r.target != "/x" for r in be.requests[1:])
    finally:
        a.close()


async def test_bystander_latency_under_ping_flood(
    setup: tuple[RunningEdge, RecordingBackend],
) -> None:
    """Many attacking connections in a row: each is cut, the bystander stays served."""
    edge, _ = setup
    for _ in range(10):
        a = await Attacker.connect(edge.port())
        _ping_flood(a)
        frame = await a.goaway()
        assert frame is not None
        a.close()
        assert await _bystander_ok(edge) < 1.0
    assert await _closed_count(edge, "ping-flood") == 10


async def test_streams_beyond_the_per_read_budget_are_refused() -> None:
    async with (
        recording_backend() as be,
        running_edge(
            edge_yaml(be.address).replace(
                "    max_resets: 50", "    max_resets: 50\n    max_new_streams_per_read: 5"
            )
        ) as edge,
    ):
        client = await H2TestClient.connect(edge.port())
        try:
            await asyncio.sleep(0.1)  # SETTINGS exchanged, so the ten HEADERS go out together
            sids = [client.conn.get_next_available_stream_id() + 2 * i for i in range(10)]
            for sid in sids:
                client.streams[sid] = StreamResult()
                client.conn.send_headers(sid, get_headers(b"edge.test", b"/burst"), end_stream=True)
            client.flush()
            results = [await client.wait(sid) for sid in sids]
            assert [r.status for r in results[:5]] == [200] * 5
            assert [r.reset_code for r in results[5:]] == [7] * 5  # REFUSED_STREAM
            assert len(be.requests) == 5
        finally:
            await client.aclose()

"""A scriptable HTTP/2 client for hostile-input tests: python-hyper h2 over a real socket.

`H2TestClient` can send what well-behaved clients never do (header blocks h2 would refuse
to build are sent with validation off, raw frames via `send_raw`), and collects every
event the edge sends back, so tests can assert on statuses, resets and GOAWAYs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import DataFrame, Frame, HeadersFrame, RstStreamFrame

__all__ = ["H2TestClient", "StreamResult"]


@dataclass
class StreamResult:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset_code: int | None = None
    ended: bool = False

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers + self.trailers:
            if n == name:
                return v
        return None


class H2TestClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.reader = reader
        self.writer = writer
        self.streams: dict[int, StreamResult] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.acknowledge = True  # False: grant no flow-control window (a stalled reader)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, port: int, *, tls: ssl.SSLContext | None = None, server_hostname: str | None = None
    ) -> H2TestClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname=server_hostname if tls else None
        )
        client = cls(reader, writer)
        client.conn.initiate_connection()
        client.flush()
        client._task = asyncio.get_running_loop().create_task(client._read())
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def send_raw(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        buffer = b""
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                buffer += data
                # Frame by frame: h2 refuses every frame after a GOAWAY (its state machine
                # closes), but a graceful GOAWAY is followed by the open streams' frames,
                # which are then decoded here directly.
                while len(buffer) >= 9:
                    length = int.from_bytes(buffer[:3], "big")
                    if len(buffer) < 9 + length:
                        break
                    frame, buffer = buffer[: 9 + length], buffer[9 + length :]
                    if self.goaway is not None:
                        self._after_goaway(frame)
                        continue
                    try:
                        events = self.conn.receive_data(frame)
                    except Exception:
                        return
                    for event in events:
                        self._on_event(event)
                self.flush()
                self._changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self._changed.set()

    def _after_goaway(self, raw: bytes) -> None:
        frame, _length = Frame.parse_frame_header(memoryview(raw[:9]))
        frame.parse_body(memoryview(raw[9:]))
        result = self.streams.get(frame.stream_id)
        if result is None:
            return
        if isinstance(frame, HeadersFrame):
            fields = self.conn.decoder.decode(frame.data, raw=True)
            if result.status == 0:
                for name, value in fields:
                    if name == b":status":
                        result.status = int(value)
                    else:
                        result.headers.append((name, value))
            else:
                result.trailers = list(fields)
        elif isinstance(frame, DataFrame):
            result.body += frame.data
        elif isinstance(frame, RstStreamFrame):
            result.reset_code = frame.error_code
        if "END_STREAM" in frame.flags:
            result.ended = True

    def _on_event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None)
        result = self.streams.setdefault(sid, StreamResult()) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and result is not None:
            for name, value in event.headers:
                if name == b":status":
                    result.status = int(value)
                else:
                    result.headers.append((name, value))
        elif isinstance(event, h2.events.DataReceived) and result is not None:
            result.body += event.data
            if self.acknowledge:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived) and result is not None:
            result.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded) and result is not None:
            result.ended = True
        elif isinstance(event, h2.events.StreamReset) and result is not None:
            result.reset_code = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def request(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None = None,
        *,
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = StreamResult()
        self.conn.send_headers(sid, list(headers), end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    async def wait(self, sid: int, timeout: float = 5.0) -> StreamResult:
        """Until stream `sid` ends or is reset (or the connection closes)."""
        async with asyncio.timeout(timeout):
            while True:
                result = self.streams[sid]
                if result.ended or result.reset_code is not None or self.closed:
                    return result
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.closed:
                self._changed.clear()
                await self._changed.wait()

    async def aclose(self) -> None:
        self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def get_headers(
    authority: bytes, path: bytes = b"/", method: bytes = b"GET"
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", authority),
        (b":path", path),
    ]

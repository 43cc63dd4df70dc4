"""In-process pipeline benchmark: the edge's per-request Python cost without any syscalls.

A real EdgeApp (1 route) is driven through fake transports: the client side feeds a GET on
a keep-alive connection, a pooled upstream connection answers each request at once with a
100-byte response. This isolates the edge's own work from the kernel and from the load
generator, and splits it into three variants:

  stub      server codec, exchange, task and response writing only (a handler answers)
  dispatch  plus routing and forwarding through the client codec (no Observe layer)
  full      the composed pipeline: access log, metrics, error boundary, dispatch

    python bench/bench_pipeline.py                 # µs per request, best of --reps
    python bench/bench_pipeline.py --variant full --requests 2000 --reps 1   # for callgrind

Exact, repeatable counts come from callgrind (wall time here swings with the machine):

    valgrind --tool=callgrind python bench/bench_pipeline.py --variant full --requests N --reps 1

run for two values of N; the difference of the totals divided by the difference of N is
the instruction count per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from typing import Any

import uvloop

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kedge.core.codec.client_h1 import H1ClientConnection
from kedge.core.codec.server_h1 import H1ServerConnection
from kedge.core.http.exchange import Exchange
from kedge.core.http.messages import ResponseHead
from kedge.edge.app import EdgeApp
from kedge.edge.config_parser import load_edge_config
from kedge.edge.layers import Dispatch

CONFIG = """
listeners: [{name: http, address: "127.0.0.1:0"}]
admin: {address: "127.0.0.1:0"}
limits: {max_keepalive_requests: 100000000}
backends:
  - name: bench
    resolver: {static: {endpoints: ["127.0.0.1:9"]}}
routes:
  - {name: bench, backend: bench, match: {host: bench.test}}
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: wrk\r\n\r\n"
BODY = b"x" * 100
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 100\r\nConnection: keep-alive\r\n\r\n" + BODY
)


class FakeTransport:
    """Just enough of asyncio.Transport for the codecs; write() hands bytes to a callback."""

    def __init__(self, on_write: Any) -> None:
        self.on_write = on_write
        self.closing = False

    def write(self, data: bytes) -> None:
        self.on_write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


async def _stub(ex: Exchange) -> None:
    ex.respond(ResponseHead(200, [(b"content-length", b"100")]), 100, True)
    await ex.send_body(BODY)
    ex.end()


async def run(variant: str, requests: int, config_path: str) -> float:
    """Seconds of CPU per request for one run."""
    loop = asyncio.get_running_loop()
    with open(os.devnull, "wb") as sink:
        app = EdgeApp(load_edge_config(config_path), access_log_stream=sink, watch_interval=0)
        backend = app.state.backends["bench"]
        backend.start()
        await asyncio.sleep(0.01)  # the static resolver publishes its endpoint
        upstream = H1ClientConnection("127.0.0.1:9", app.sweeper)
        upstream.connection_made(  # type: ignore[arg-type]
            FakeTransport(lambda _d: loop.call_soon(upstream.data_received, RESPONSE))
        )
        pool = backend.pool(backend.pick())
        pool.release(upstream)
        pool.open_connections = 1
        handler = {
            "stub": _stub,
            "dispatch": Dispatch(lambda: app.state, app.forwarder, app.adhoc_pools),
            "full": app.handler,
        }[variant]
        done = loop.create_future()
        count = 0

        def on_client_write(_data: bytes) -> None:
            nonlocal count
            count += 1
            if count >= requests:
                if not done.done():
                    done.set_result(None)
            else:
                loop.call_soon(server.data_received, REQUEST)

        server = H1ServerConnection(
            app.listeners.settings["http"], handler, app.request_ids, app.sweeper
        )
        server.connection_made(FakeTransport(on_client_write))  # type: ignore[arg-type]
        cpu = time.process_time()
        server.data_received(REQUEST)
        await done
        cpu = time.process_time() - cpu
        await app.aclose()
    return cpu / requests


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--variant", choices=("stub", "dispatch", "full", "all"), default="all")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    variants = ("stub", "dispatch", "full") if args.variant == "all" else (args.variant,)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "edge.yaml")
        with open(path, "w") as f:
            f.write(CONFIG)
        print(f"python {sys.version.split()[0]}, {args.requests} requests, best of {args.reps}")
        for variant in variants:
            best = min(uvloop.run(run(variant, args.requests, path)) for _ in range(args.reps))
            print(f"{variant:9} {best * 1e6:8.1f} us CPU per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

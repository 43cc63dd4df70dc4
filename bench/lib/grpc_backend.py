"""A gRPC unary backend for the bench: grpc.aio with a generic handler (no generated code).

`python bench/lib/grpc_backend.py PORT` serves /kedge.e2e.Greeter/SayHello over h2c and
answers every call with the request bytes echoed (one small message), like the HTTP
backend's fixed body. Run on the load CPU; the bench charges the proxy only.
"""

from __future__ import annotations

import asyncio
import sys

import grpc


def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
    return request


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "kedge.e2e.Greeter", {"SayHello": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))

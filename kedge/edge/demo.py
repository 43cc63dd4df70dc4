"""The built-in demo backend: answers every request with a small JSON echo of what it got.

It lets `kedge serve` with no config answer `curl` at once, and shows what the edge
forwards (X-Forwarded-*, Forwarded, Via, X-Request-Id).
"""

from __future__ import annotations

from aiohttp import web

from kedge.edge.config import Address
from kedge.edge.observability.admin import AdminServer

__all__ = ["start_demo_backend"]

_MAX_ECHO_BODY = 4096


async def _echo(request: web.Request) -> web.Response:
    body = await request.content.read()
    text = body[:_MAX_ECHO_BODY].decode("utf-8", "replace")
    return web.json_response(
        {
            "service": "kedge demo backend",
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_bytes": len(body),
            "body": text,
        }
    )


async def start_demo_backend(address: Address) -> AdminServer:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, address.host, address.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return AdminServer(runner, int(runner.addresses[0][1]))

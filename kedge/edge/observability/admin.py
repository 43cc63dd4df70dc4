"""Admin listener: /livez, /readyz, /metrics and /status over aiohttp, apart from the proxy.

It runs on its own address (by default 127.0.0.1:9901) so that probes and scrapes never
share queues, limits or routes with proxied traffic. The app knows nothing of the edge:
it is given four callables by the composition root.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from kedge.core.metrics import EXPOSITION_CONTENT_TYPE
from kedge.edge.config import Address

__all__ = ["AdminServer", "make_admin_app", "start_admin"]

_TEXT = "text/plain"


def make_admin_app(
    *,
    is_live: Callable[[], bool],
    readiness: Callable[[], tuple[bool, str]],
    render_metrics: Callable[[], bytes],
    status: Callable[[], dict[str, object]],
) -> web.Application:
    """GET (and HEAD) /livez, /readyz, /metrics, /status; any other method gets 405.

    A callback that raises answers 500 (503 for the probes, so that a broken check reads
    as "not ready" to Kubernetes) with a one-line reason and no traceback.
    """

    async def livez(_: web.Request) -> web.Response:
        try:
            live = is_live()
        except Exception:
            live = False
        if live:
            return web.Response(text="ok", content_type=_TEXT)
        return web.Response(status=503, text="not live", content_type=_TEXT)

    async def readyz(_: web.Request) -> web.Response:
        try:
            ready, reason = readiness()
        except Exception as exc:
            ready, reason = False, f"readiness check failed: {type(exc).__name__}"
        if ready:
            return web.Response(text="ready", content_type=_TEXT)
        return web.Response(status=503, text=reason or "not ready", content_type=_TEXT)

    async def metrics(_: web.Request) -> web.Response:
        try:
            body = render_metrics()
        except Exception as exc:
            return _failure("metrics", exc)
        # Set the header directly: aiohttp's content_type= refuses parameters like version.
        return web.Response(body=body, headers={"Content-Type": EXPOSITION_CONTENT_TYPE})

    async def status_json(_: web.Request) -> web.Response:
        try:
            body = orjson.dumps(status(), default=str)
        except Exception as exc:
            return _failure("status", exc)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status_json)
    return app


def _failure(what: str, exc: Exception) -> web.Response:
    return web.Response(status=500, text=f"{what} failed: {type(exc).__name__}", content_type=_TEXT)


class AdminServer:
    """A started admin listener; `aclose()` stops accepting and closes its connections."""

    def __init__(self, runner: web.AppRunner, bound_port: int) -> None:
        self._runner = runner
        self.bound_port = bound_port

    async def aclose(self) -> None:
        await self._runner.cleanup()


async def start_admin(
    app: web.Application, address: Address, *, shutdown_timeout: float = 2.0
) -> AdminServer:
    """Listen on `address` (port 0 picks a free port, see `bound_port`).

    aiohttp's access log is off: scrapes and probes every few seconds are noise, and the
    edge's own access log covers proxied traffic. `shutdown_timeout` bounds how long
    `aclose()` waits for an in-flight scrape.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address.host, address.port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return AdminServer(runner, bound_port)

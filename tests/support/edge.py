"""Run a real edge in the test's event loop: listeners on 127.0.0.1 port 0, real sockets.

`running_edge(yaml_text)` parses YAML exactly as `kedge serve --config` does (through a
file, so reloads work), rewrites nothing, and yields the started EdgeApp with its bound
ports. Use `port: 0` style addresses (`127.0.0.1:0`) in the YAML.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from kedge.edge.app import EdgeApp
from kedge.edge.config_parser import load_edge_config

__all__ = ["RunningEdge", "running_edge", "wait_ready"]


@dataclass
class RunningEdge:
    app: EdgeApp
    config_path: str
    log: io.BytesIO

    def port(self, listener: str = "http") -> int:
        return self.app.listener_ports[listener]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port()}"

    @property
    def admin_url(self) -> str:
        assert self.app.admin is not None
        return f"http://127.0.0.1:{self.app.admin.bound_port}"

    def log_lines(self) -> list[bytes]:
        self.app.access_log.flush()
        return [line for line in self.log.getvalue().splitlines() if line]

    def write_config(self, text: str) -> None:
        """Replace the config file atomically (as a ConfigMap update would)."""
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)


async def wait_ready(app: EdgeApp, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not app.readiness()[0]:
            await asyncio.sleep(0.01)


@asynccontextmanager
async def running_edge(
    yaml_text: str, *, watch_interval: float = 0.0, wait_until_ready: bool = True
) -> AsyncIterator[RunningEdge]:
    """`wait_until_ready=False` yields as soon as the edge started, ready or not (for
    tests of readiness itself)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "edge.yaml")
        with open(path, "w") as f:
            f.write(yaml_text)
        log = io.BytesIO()
        app = EdgeApp(
            load_edge_config(path),
            config_path=path,
            access_log_stream=log,
            watch_interval=watch_interval,
        )
        await app.start()
        try:
            if wait_until_ready:
                await wait_ready(app)
            yield RunningEdge(app, path, log)
        finally:
            await app.aclose()


def one_route_yaml(
    backend: str,
    *,
    host: str = "app.test",
    top: str = "",
    backend_extra: str = "",
    route_match_extra: str = "",
) -> str:
    """An edge on 127.0.0.1:0 with one backend `b` (static `backend` address) and one route
    for `host`. `top` adds top-level YAML lines (e.g. "limits: {max_connections: 2}"),
    `backend_extra` keys of the backend (e.g. "timeouts: {response_header: 1s}") and
    `route_match_extra` keys of the route's match (e.g. "proxy_mode: forward")."""
    match = f"host: {host}" + (f", {route_match_extra}" if route_match_extra else "")
    extra = f"\n    {backend_extra}" if backend_extra else ""
    return f"""
listeners: [{{name: http, address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
{top}
backends:
  - name: b
    resolver: {{static: {{endpoints: ["{backend}"]}}}}{extra}
routes: [{{backend: b, match: {{{match}}}}}]
"""

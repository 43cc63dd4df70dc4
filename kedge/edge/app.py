"""The edge's composition root: the only place that builds concrete objects.

EdgeApp owns, in creation order: the deadline sweeper, metrics, access log, backends (with
their resolver tasks), the pipeline, the demo backend, the admin listener and the proxy
listeners. `aclose()` closes them in reverse. Reload (SIGHUP or a changed file) validates a
new config, builds a new EdgeState and swaps one reference; SIGTERM drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import IO

from kedge.core.codec.server_h1 import H1ServerConnection
from kedge.core.codec.server_h2 import H2ServerConnection
from kedge.core.config_watch import ConfigFileWatcher
from kedge.core.deadlines import DeadlineSweeper
from kedge.core.errors import ConfigError
from kedge.core.http.exchange import Exchange
from kedge.core.http.headers import RequestIdGenerator
from kedge.core.metrics import MetricsRegistry
from kedge.edge.auth.policy import Verdict
from kedge.edge.auth.runtime import AuthRuntime
from kedge.edge.balancing.load import LoadBook
from kedge.edge.config import EdgeConfig, K8sResolverConfig
from kedge.edge.config_parser import load_edge_config
from kedge.edge.demo import start_demo_backend
from kedge.edge.discovery.factory import make_resolver
from kedge.edge.discovery.kubernetes.discovery_runtime import DiscoveryRuntime
from kedge.edge.discovery.kubernetes.runtime import KubeRuntime, without_discovery
from kedge.edge.forwarding.backend import Backend
from kedge.edge.forwarding.connect_tunnel import ConnectTunnels
from kedge.edge.forwarding.forwarder import Forwarder
from kedge.edge.forwarding.pool import AdhocPools
from kedge.edge.layers import Dispatch, ErrorBoundary, Observe, compose
from kedge.edge.listeners import ClientListeners
from kedge.edge.observability.access_log import AccessLog
from kedge.edge.observability.admin import AdminServer, make_admin_app, start_admin
from kedge.edge.observability.edge_metrics import EdgeMetrics
from kedge.edge.observability.status import discovery_status, edge_status
from kedge.edge.routing.table import RouteTable
from kedge.edge.state import EdgeState

__all__ = ["EdgeApp"]

log = logging.getLogger("kedge.edge")

# A reload waits this long for the resolvers of new backends to publish before it swaps
# (swapping earlier would answer 503 no-endpoints until they do); then it swaps anyway.
_RELOAD_SYNC_TIMEOUT = 5.0


def _freeze_long_lived() -> None:
    """Move what exists now (modules, config, route table) out of the cyclic GC's reach.

    Full collections would otherwise rescan a large route table again and again, a latency
    spike that grows with the table. Refcounting still frees these objects when a reload
    drops them; only reference cycles among them would stay (there are none by design).
    """
    gc.freeze()


class EdgeApp:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        config_path: str | None = None,
        access_log_stream: IO[bytes] | None = None,
        watch_interval: float = 1.0,
    ) -> None:
        self.config_path = config_path
        self.sweeper = DeadlineSweeper()
        self.registry = MetricsRegistry()
        self.metrics = EdgeMetrics(self.registry)
        self.access_log = AccessLog(access_log_stream if config.access_log else None, time.time)
        self.request_ids = RequestIdGenerator()
        self.forwarder = Forwarder(
            on_retry=lambda b: self.metrics.upstream_retries.labels(b).inc(),
            on_connect_failure=lambda b: self.metrics.upstream_connect_failures.labels(b).inc(),
        )
        self.adhoc_pools = AdhocPools(self.sweeper)
        # In-flight counts and latency estimates per endpoint, shared by every backend.
        self.loads = LoadBook()
        self.auth = AuthRuntime(self._on_auth_decision)
        self.kube = KubeRuntime()
        self.file_config = config  # the config file's own; state.config adds discovered routes
        self.discovery = DiscoveryRuntime(
            self.kube, self._discovery_changed, self.metrics, self.access_log
        )
        self._retiring: set[asyncio.Task[None]] = set()
        self.state = self._build_state(config, 1, None)
        failures = self.metrics.upstream_connect_failures

        def connect_failures(backend: str) -> None:
            failures.labels(backend).inc()

        self.handler = compose(
            [Observe(self.access_log, self.metrics), ErrorBoundary()],
            Dispatch(
                lambda: self.state,
                self.forwarder,
                self.adhoc_pools,
                ConnectTunnels(self.sweeper, on_connect_failure=connect_failures),
            ),
        )
        self.listeners = ClientListeners(
            config,
            self.handler,
            self.request_ids,
            self.sweeper,
            self.metrics,
            self.access_log,
            max_connections=lambda: self.state.config.limits.max_connections,
        )
        self.admin: AdminServer | None = None
        self.demo: AdminServer | None = None
        self._started_ready = False  # readiness gate: all resolvers synced once since start
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reloads: set[asyncio.Task[bool]] = set()
        self._reload_lock = asyncio.Lock()
        self._resolver_progress = asyncio.Event()  # set whenever a resolver publishes
        self._watch_interval = watch_interval
        self._watcher = (
            ConfigFileWatcher(config_path, watch_interval, lambda: self.reload("file changed"))
            if config_path is not None
            else None
        )
        self.metrics.config_generation.set(1)
        m = self.metrics
        m.endpoint_in_flight.set_collector(partial(self._endpoint_series, "in_flight"))
        m.endpoint_latency.set_collector(partial(self._endpoint_series, "latency"))
        m.endpoint_available.set_collector(partial(self._endpoint_series, "available"))

    # -- state ---------------------------------------------------------------------------
    def _make_backend_on_change(self) -> Callable[[Backend], None]:
        def on_change(backend: Backend) -> None:
            self.metrics.backend_endpoints.labels(backend.name).set(len(backend.endpoints.ready))
            self._resolver_progress.set()

        return on_change

    def _build_state(
        self,
        config: EdgeConfig,
        generation: int,
        old: EdgeState | None,
        table: RouteTable | None = None,
    ) -> EdgeState:
        if table is None:
            table = RouteTable.compile(config.routes, source=config.source)
        backends: dict[str, Backend] = {}
        kube_changed = old is not None and without_discovery(
            old.config.kubernetes
        ) != without_discovery(config.kubernetes)
        kube = partial(self.kube.watches_for, config.kubernetes)
        for bc in config.backends:
            previous = old.backends.get(bc.name) if old else None
            on_k8s = isinstance(bc.resolver, K8sResolverConfig)
            same_place = previous is not None and previous.locality == config.locality
            if (
                previous is not None
                and previous.config == bc
                and same_place
                and not (on_k8s and kube_changed)
            ):
                backends[bc.name] = previous  # keeps pools, load and endpoints
                continue
            backends[bc.name] = Backend(
                bc,
                make_resolver(
                    bc.resolver,
                    kube=kube,
                    serve_terminating=config.kubernetes.serve_terminating,
                ),
                self.sweeper,
                max_response_header_bytes=config.limits.max_response_header_bytes,
                on_change=self._make_backend_on_change(),
                on_connect=self.metrics.upstream_connections_opened.labels(bc.name).inc,
                loads=self.loads,
                locality=config.locality,
                health_hooks=self.metrics.health_hooks(bc.name),
            )
        return EdgeState(config, generation, table, backends, self.auth.gate_for(config))

    def _on_auth_decision(self, ex: Exchange, verdict: Verdict, reason: str) -> None:
        self.metrics.auth_decisions.labels(ex.route, verdict.value).inc()
        if verdict is not Verdict.ALLOW and verdict is not Verdict.ANONYMOUS:
            self.access_log.log_event(
                "info",
                "auth refused",
                request_id=ex.request_id.decode("latin-1"),
                route=ex.route,
                principal=ex.principal or None,
                verdict=verdict.value,
                reason=reason,
            )

    def _endpoint_series(self, what: str) -> list[tuple[tuple[str, ...], float]]:
        """Per-endpoint gauges at scrape time, for every backend of the current state."""
        out: list[tuple[tuple[str, ...], float]] = []
        for name, b in self.state.backends.items():
            for e in b.endpoints.endpoints + b.remotes.endpoints:
                labels = (
                    name,
                    e.key,
                    str(b.tier(e)),
                    e.label("cluster") or "",
                    e.label("zone") or "",
                )
                if what == "in_flight":
                    value = float(b.loads.in_flight(e.key))
                elif what == "latency":
                    value = b.loads.estimate(e.key)
                else:
                    value = 1.0 if b.health.available(e.key) else 0.0
                out.append((labels, value))
        return out

    def readiness(self) -> tuple[bool, str]:
        """Ready once every backend's resolver has published at least once since start.

        Only the start gates readiness: a backend added later by a reload that never
        resolves must not pull every replica out of its Service (an outage caused by one
        bad backend); it answers its own requests with 503 `no-endpoints` instead, and
        `/status` shows it as not synced.
        """
        if self.draining:
            return False, "draining"
        if not self._started_ready:
            if self.discovery.waiting_for_first_list:
                return False, "route discovery has not listed its Services yet"
            pending = sorted(n for n, b in self.state.backends.items() if not b.synced)
            if pending:
                return False, "resolvers not synced: " + ", ".join(pending)
            self._started_ready = True
        return True, "ready"

    def status(self) -> dict[str, object]:
        return edge_status(
            self.state,
            draining=self.draining,
            listeners=self.listener_ports,
            connections=len(self.connections),
            kubernetes_watches=self.kube.watches.status() if self.kube.watches else None,
            discovery=discovery_status(self.discovery.report)
            if self.discovery.discovery is not None
            else None,
        )

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.state.config
        self.sweeper.start()
        for b in self.state.backends.values():
            b.start()
        if cfg.demo_backend is not None:
            self.demo = await start_demo_backend(cfg.demo_backend)
        self.admin = await start_admin(
            make_admin_app(
                is_live=lambda: True,
                readiness=self.readiness,
                render_metrics=self.registry.render,
                status=self.status,
            ),
            cfg.admin.address,
        )
        self.auth.prefetch()
        self._sync_discovery(self.file_config)
        for listener in cfg.listeners:
            await self.listeners.listen(listener, cfg.http2.enabled)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._flush_access_log(), name="kedge-access-log"))
        if self._watcher is not None and self._watcher.interval > 0:
            self._tasks.append(loop.create_task(self._watcher.run(), name="kedge-config-watch"))
        if self._watch_interval > 0 and self.listeners.tls:
            self._tasks.append(
                loop.create_task(
                    self._watch_tls_files(self._watch_interval), name="kedge-tls-watch"
                )
            )
        _freeze_long_lived()
        self.access_log.log_event(
            "info",
            "edge started",
            config=cfg.source,
            listeners=self.listener_ports,
            admin=self.admin.bound_port,
        )
        self.access_log.flush()

    async def _flush_access_log(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.access_log.flush()

    # -- reload ---------------------------------------------------------------------------
    def _reload_soon(self, why: str) -> None:
        """Run a reload from a signal handler (which cannot await)."""
        task = asyncio.get_running_loop().create_task(self.reload(why))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _wait_synced(self, backends: list[Backend], seconds: float) -> list[str]:
        """Wait until each backend's resolver has published once; the names still pending."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            pending = [b.name for b in backends if not b.synced]
            remaining = deadline - loop.time()
            if not pending or remaining <= 0:
                return pending
            self._resolver_progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._resolver_progress.wait()

    async def reload(self, why: str = "SIGHUP") -> bool:
        """Validate the config file and swap it in; a bad file keeps the old config.

        Reloads run one at a time. New backends start first and the swap waits (bounded)
        until their resolvers have published, so no request meets an empty endpoint set.
        """
        async with self._reload_lock:
            return await self._reload(why)

    async def _reload(self, why: str) -> bool:
        if self.config_path is None:
            self.access_log.log_event("warning", "reload ignored: no config file", reason=why)
            return False
        # Stamp before reading: the watcher then skips the file this reload reads (a SIGHUP
        # after a write reloads once), and a write after the stamp still triggers a reload.
        if self._watcher is not None:
            self._watcher.mark_read()
        try:
            config = await asyncio.to_thread(load_edge_config, self.config_path)
        except (ConfigError, OSError) as exc:
            self._reload_failed(why, exc)
            return False
        return await self._swap(config, why, reload=True)

    def _reload_failed(self, why: str, exc: Exception) -> None:
        # OSError: the file parsed, but a backend could not be built from it (e.g. a CA
        # file with no certificate in it; ssl.SSLError is an OSError).
        error = str(exc) if isinstance(exc, ConfigError) else f"{self.config_path}: {exc}"
        self.metrics.config_reloads.labels("failure").inc()
        self.access_log.log_event(
            "error", "config reload failed; keeping the old config", reason=why, error=error
        )
        self.access_log.flush()

    async def _swap(self, config: EdgeConfig, why: str, *, reload: bool) -> bool:
        """Build the state of `config` (the file's, plus discovered routes), start its new
        backends, wait (bounded) until they resolved, and swap it in."""
        merged = self.discovery.merge(config)
        try:
            # Compiling a large table takes seconds (100k routes: ~2 s): do it off the
            # event loop, which keeps serving meanwhile.
            table = await asyncio.to_thread(RouteTable.compile, merged.routes, source=merged.source)
            old = self.state
            new = self._build_state(merged, old.generation + 1, old, table)
        except (ConfigError, OSError) as exc:
            if reload:
                self._reload_failed(why, exc)
            else:
                self.access_log.log_event("error", "discovered routes not applied", error=str(exc))
            return False
        fresh = [b for n, b in new.backends.items() if old.backends.get(n) is not b]
        try:
            for b in fresh:
                b.start()
            pending = await self._wait_synced(fresh, _RELOAD_SYNC_TIMEOUT)
        except BaseException:  # cancelled (shutdown): the new state never goes live
            for b in fresh:
                await b.aclose()
            raise
        if pending:
            self.access_log.log_event(
                "warning", "swapping in before these backends resolved", backends=pending
            )
        self._apply_listener_changes(old.config, merged)
        self.file_config = config
        self.state = new  # the swap: new exchanges see the new table from here on
        self.auth.prefetch()
        self._retire(old, new)
        self._sync_discovery(config)
        _freeze_long_lived()
        self.metrics.config_generation.set(new.generation)
        if reload:
            self.metrics.config_reloads.labels("success").inc()
        self.access_log.log_event(
            "info",
            "config reloaded" if reload else "discovered routes applied",
            reason=why,
            generation=new.generation,
            routes=len(merged.routes),
        )
        self.access_log.flush()
        return True

    def _retire(self, old: EdgeState, new: EdgeState) -> None:
        """Close what the old state had and the new one does not use."""
        loop = asyncio.get_running_loop()
        # In-flight exchanges may still hold an old backend: its pools close connections
        # as they are released, and its resolver stops now.
        closing = [b.aclose() for n, b in old.backends.items() if new.backends.get(n) is not b]
        closing += [w.aclose() for w in self.kube.take_retired()]
        closing += [s.aclose() for s in self.auth.take_retired()]
        for coro in closing:
            task = loop.create_task(coro)
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    # -- route discovery --------------------------------------------------------------
    def _sync_discovery(self, config: EdgeConfig) -> None:
        stopped = self.discovery.sync(config)
        if stopped is not None:
            task = asyncio.get_running_loop().create_task(stopped.aclose())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _discovery_changed(self) -> None:
        async with self._reload_lock:
            await self._swap(self.file_config, "services changed", reload=False)

    def _apply_listener_changes(self, old: EdgeConfig, new: EdgeConfig) -> None:
        self.listeners.apply_config(new)
        tls_changed = [o.tls for o in old.listeners] != [n.tls for n in new.listeners]
        self._tls_rebuilt(self.listeners.refresh_tls(new if tls_changed else None), "reload")
        if old.listeners != new.listeners or old.admin != new.admin:
            self.access_log.log_event(
                "warning",
                "listener or admin address changes take effect after a restart",
            )

    def _tls_rebuilt(self, results: list[tuple[str, str | None]], why: str) -> None:
        for listener, error in results:
            self.metrics.tls_reloads.labels(listener, "failure" if error else "success").inc()
            if error is None:
                self.access_log.log_event(
                    "info", "listener TLS reloaded for new connections", listener=listener,
                    reason=why,
                )  # fmt: skip
            else:
                self.access_log.log_event(
                    "error", "listener TLS reload failed; keeping the old certificate",
                    listener=listener, reason=why, error=error,
                )  # fmt: skip
        if results:
            self.access_log.flush()

    async def _watch_tls_files(self, interval: float) -> None:
        """cert-manager renews certificates and CRLs are republished without any config
        change: poll the listeners' TLS files as the config file is polled."""
        while True:
            await asyncio.sleep(interval)
            self._tls_rebuilt(self.listeners.refresh_tls(), "files changed")

    # -- shutdown -------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon, "SIGHUP")
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish within the drain timeout."""
        self.metrics.draining.set(1)
        self.access_log.log_event("info", "draining", connections=len(self.listeners.connections))
        self.access_log.flush()
        left = await self.listeners.drain(self.state.config.timeouts.drain)
        if left:
            self.access_log.log_event(
                "warning", "drain timeout: closing connections", connections=left
            )

    @property
    def draining(self) -> bool:
        return self.listeners.draining

    @property
    def connections(self) -> set[H1ServerConnection | H2ServerConnection]:
        return self.listeners.connections

    @property
    def listener_ports(self) -> dict[str, int]:
        return self.listeners.ports

    async def aclose(self) -> None:
        for reload in list(self._reloads):
            reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.listeners.abort()
        if self.admin is not None:
            await self.admin.aclose()
        if self.demo is not None:
            await self.demo.aclose()
        for b in self.state.backends.values():
            await b.aclose()
        await self.discovery.aclose()
        await self.auth.aclose()
        await self.kube.aclose()
        self.adhoc_pools.close()
        await self.sweeper.aclose()
        self.access_log.log_event("info", "edge stopped")
        self.access_log.flush()

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Start, run until SIGTERM/SIGINT, drain, close."""
        await self.start()
        if handle_signals:
            self.install_signal_handlers()
        try:
            await self.wait_stopped()
            await self.drain()
        finally:
            await self.aclose()

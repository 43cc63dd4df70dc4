"""FakeKube: an in-process fake of kube-apiserver on 127.0.0.1 for tests, with a Python control API.

It serves discovery, GET, list and watch (see api.py and watch.py) over HTTPS (a trustme CA,
bearer tokens and/or client certificates) or plain HTTP, and lets a test:
- write objects (`apply`, `create`, `replace`, `delete`), which bumps the resourceVersion and
  wakes the watches; `compact()` makes older versions expire;
- break watches (`disconnect_watches`, `expire_watches`) and the whole server (`go_down` with
  "refuse": the port is closed and every connection cut; or "hang": connections are accepted and
  nothing is answered), then `come_back()` on the same port;
- count requests per verb and resource (`requests`, `count_requests`) and list open watches.

All of it runs on the event loop that started the server: call the control API from that loop.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from .api import USER, ApiHandlers, not_found_response, status_response
from .credentials import ClientCert, KubeTls, write_kubeconfig
from .objects import namespace
from .protocol import ListOptions, Verb, parse_api_path
from .request_log import RequestRecord, classify, count
from .resources import RESOURCES, ResourceType
from .store import ObjectStore, StoredEvent
from .watch import WatchInfo, WatchStream

__all__ = ["DEFAULT_TOKEN", "FakeKube"]

DEFAULT_TOKEN = "fake-kube-admin-token"
ANONYMOUS = "system:anonymous"


class FakeKube:
    """A fake kube-apiserver; `async with FakeKube(...) as kube:` starts and stops it."""

    def __init__(
        self,
        *,
        tls: bool = True,
        tokens: Mapping[str, str] | None = None,
        client_certs: bool = True,
        anonymous: bool = False,
        resources: Sequence[ResourceType] = RESOURCES,
        history_limit: int = 10_000,
        bookmark_interval: float = 60.0,
        watch_timeout: float | None = None,
    ) -> None:
        """`tokens` maps bearer tokens to user names (default: DEFAULT_TOKEN -> "admin");
        `client_certs` accepts certificates from `issue_client_cert` (HTTPS only);
        `anonymous` serves unauthenticated requests; `watch_timeout` ends watches that gave no
        timeoutSeconds (the apiserver picks 30-60 min); `bookmark_interval` is in seconds."""
        self.tls = KubeTls() if tls else None
        self.tokens = dict(tokens) if tokens is not None else {DEFAULT_TOKEN: "admin"}
        self.client_certs = client_certs and tls
        self.anonymous = anonymous
        self.store = ObjectStore(resources, history_limit=history_limit)
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        self.requests: list[RequestRecord] = []
        self._watches: set[WatchStream] = set()
        self._watches_changed = asyncio.Event()
        self._up = asyncio.Event()
        self._up.set()
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._ssl: ssl.SSLContext | None = None
        self.port = 0
        self._api = ApiHandlers(
            self.store, lambda: f"127.0.0.1:{self.port}", self._run_watch, self._make_watch
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        if self.tls is None:
            raise RuntimeError("a plain-HTTP FakeKube has no CA")
        return self.tls.ca_pem

    @property
    def token(self) -> str:
        """The first accepted bearer token."""
        return next(iter(self.tokens))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        if self.tls is not None:
            self._ssl = self.tls.server_context(client_certs=self.client_certs)
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        # Our own socket so the port is known, and SO_REUSEADDR so come_back() can rebind it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock, ssl_context=self._ssl)
        await self._site.start()

    async def aclose(self) -> None:
        self._up.set()
        for watch in list(self._watches):
            watch.stop("abort")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKube:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- credentials -------------------------------------------------------------------------

    def issue_client_cert(self, user: str, group: str | None = None) -> ClientCert:
        if self.tls is None:
            raise RuntimeError("client certificates need tls=True")
        return self.tls.issue_client_cert(user, group)

    def client_ssl_context(self, cert: ClientCert | None = None) -> ssl.SSLContext | bool:
        """What to pass as aiohttp's `ssl=`: a context trusting the fake's CA (presenting
        `cert`), or True (the default, unused for http://) for a plain-HTTP fake."""
        return True if self.tls is None else self.tls.client_context(cert)

    def write_kubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        client_cert: ClientCert | None = None,
        namespace: str | None = None,
    ) -> Path:
        """A kubeconfig for this server; with neither credential, the default token is used."""
        if token is None and client_cert is None:
            token = self.token
        ca = self.tls.ca_pem if self.tls is not None else None
        return write_kubeconfig(
            path,
            server=self.url,
            ca_pem=ca,
            token=token,
            client_cert=client_cert,
            namespace=namespace,
        )

    # -- control API: objects ----------------------------------------------------------------

    def resource(self, name: str | ResourceType) -> ResourceType:
        """A resource by plural, kind, singular or short name (`services`, `Service`, `svc`)."""
        if isinstance(name, ResourceType):
            return name
        for r in self.store.resources:
            if name in (r.plural, r.kind, r.singular, *r.short_names):
                return r
        raise KeyError(f"unknown resource {name!r}")

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self._ensure_namespace(obj)
        return self._after(self.store.create(obj))

    def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Update (409 Conflict if its resourceVersion is stale); a no-op writes nothing."""
        event = self.store.replace(obj)
        return self._after(event) if event else self._current(obj)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or overwrite the object; return it as stored."""
        self._ensure_namespace(obj)
        event = self.store.apply(obj)
        return self._after(event) if event else self._current(obj)

    def delete(self, resource: str | ResourceType, namespace: str | None, name: str) -> None:
        self._after(self.store.delete(self.resource(resource), namespace, name))

    def get(
        self, resource: str | ResourceType, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        obj = self.store.get(self.resource(resource), namespace, name)
        return None if obj is None else copy.deepcopy(obj)

    def objects(
        self, resource: str | ResourceType, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        items = self.store.select(self.resource(resource), namespace=namespace)
        return [copy.deepcopy(obj) for obj in items]

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def compact(self) -> None:
        """Drop all event history: every older resourceVersion now gets 410 Expired."""
        self.store.compact()

    def _ensure_namespace(self, obj: Mapping[str, Any]) -> None:
        resource = self.store.resource_of(obj)
        name = obj.get("metadata", {}).get("namespace") or "default"
        namespaces = self.resource("namespaces")
        if resource.namespaced and self.store.get(namespaces, None, name) is None:
            self._after(self.store.create(namespace(name)))

    def _current(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata", {})
        found = self.store.get(self.store.resource_of(obj), meta.get("namespace"), meta["name"])
        assert found is not None
        return copy.deepcopy(found)

    def _after(self, event: StoredEvent) -> dict[str, Any]:
        """Wake the watches of the event's resource; return the stored object."""
        resource = self.store.resource_of(event.object)
        for watch in self._watches:
            if watch.resource == resource:
                watch.wake()
        return copy.deepcopy(dict(event.object))

    # -- control API: faults -----------------------------------------------------------------

    def open_watches(self, resource: str | ResourceType | None = None) -> list[WatchInfo]:
        chosen = None if resource is None else self.resource(resource)
        return [w.info for w in self._watches if chosen is None or w.resource == chosen]

    async def wait_for_watches(
        self, count: int = 1, resource: str | ResourceType | None = None, *, timeout: float = 5.0
    ) -> list[WatchInfo]:
        """Wait until exactly `count` watches (of `resource`) are open; TimeoutError if not.
        A watch counts as open from when its request arrived, so no later write is missed."""
        async with asyncio.timeout(timeout):
            while True:
                self._watches_changed.clear()
                found = self.open_watches(resource)
                if len(found) == count:
                    return found
                await self._watches_changed.wait()

    def disconnect_watches(
        self, resource: str | ResourceType | None = None, *, clean: bool = False
    ) -> int:
        """Cut open watches mid-stream (or end them cleanly, as a timeout does); return how many."""
        return self._stop_watches(resource, "close" if clean else "abort")

    def expire_watches(self, resource: str | ResourceType | None = None) -> int:
        """Send open watches an ERROR 410 Expired event and end them; return how many."""
        return self._stop_watches(resource, "expire")

    def _stop_watches(
        self, resource: str | ResourceType | None, action: Literal["close", "abort", "expire"]
    ) -> int:
        chosen = None if resource is None else self.resource(resource)
        stopped = [w for w in self._watches if chosen is None or w.resource == chosen]
        for watch in stopped:
            watch.stop(action)
        return len(stopped)

    async def go_down(self, mode: Literal["refuse", "hang"] = "refuse") -> None:
        """An outage: "refuse" closes the port and cuts every connection; "hang" keeps
        accepting but answers nothing (and watches send nothing) until `come_back()`."""
        if mode == "hang":
            self._up.clear()
            return
        if self._site is not None:
            await self._site.stop()
            self._site = None
        for watch in list(self._watches):
            watch.stop("abort")
        if self._runner is not None and self._runner.server is not None:
            for connection in self._runner.server.connections:
                connection.force_close()

    async def come_back(self) -> None:
        if self._site is None:
            await self._listen()
        self._up.set()

    # -- request log -------------------------------------------------------------------------

    def count_requests(
        self,
        verb: Verb | None = None,
        resource: str | ResourceType | None = None,
        namespace: str | None = None,
    ) -> int:
        plural = None if resource is None else self.resource(resource).plural
        return count(self.requests, verb, plural, namespace)

    # -- HTTP ----------------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> str | None:
        """The user: a verified client certificate's CN, else a known bearer token's user.
        A presented but unknown token is refused even when anonymous access is on (upstream)."""
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        if peer:
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return str(value)
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            return self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        return ANONYMOUS if self.anonymous else None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        user = self._authenticate(request)
        query = {k: request.query[k] for k in request.query}
        record = classify(request.method, request.path, query, user, self.store.resources)
        self.requests.append(record)
        await self._up.wait()
        if user is None:
            return status_response(401, "Unauthorized", "Unauthorized")
        target = parse_api_path(request.path, self.store.resources)
        if target is not None:
            request[USER] = user
            return await self._api.resource(request, target)
        found = self._api.discovery(request)
        if found is None:
            return not_found_response()
        return found

    def _make_watch(
        self,
        resource: ResourceType,
        namespace: str | None,
        options: ListOptions,
        info: WatchInfo,
        as_table: bool,
    ) -> WatchStream:
        timeout = options.timeout_seconds if options.timeout_seconds else self.watch_timeout
        return WatchStream(
            self.store,
            resource,
            namespace,
            options,
            info,
            bookmark_interval=self.bookmark_interval,
            timeout=None if timeout is None else float(timeout),
            wait_until_up=self._up.wait,
            as_table=as_table,
        )

    async def _run_watch(self, request: web.Request, watch: WatchStream) -> web.StreamResponse:
        self._watches.add(watch)
        self._watches_changed.set()
        try:
            return await watch.run(request)
        finally:
            self._watches.discard(watch)
            self._watches_changed.set()

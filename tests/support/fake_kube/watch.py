"""One watch stream of the fake Kubernetes API: newline-delimited JSON events over chunked HTTP.

Like the apiserver's cacher, a watch with no resourceVersion (or "0") starts with a synthetic
ADDED event per current object, then follows the store's history from the version it listed at;
a watch from an explicit version replays the history after it, or sends one ERROR event with a
410 Expired Status when that history is gone and ends. `allowWatchBookmarks` adds a BOOKMARK
every `bookmark_interval` seconds and `timeoutSeconds` ends the stream cleanly (the terminating
chunk), which clients treat as "reconnect from the last version".

The stream is driven by `WatchStream.run()`; the server wakes it on every write to the store and
may ask it to end (`close`), to cut the connection mid-stream (`abort`) or to send a 410 ERROR
(`expire`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from .protocol import ListOptions, bookmark_object, status_body
from .resources import ResourceType
from .store import Expired, ObjectStore, filter_event
from .tables import table_body

__all__ = ["WatchInfo", "WatchStream"]

Action = Literal["close", "abort", "expire"]


@dataclass(frozen=True)
class WatchInfo:
    """An open watch, for tests that count watches per resource and selector."""

    resource: str
    namespace: str | None
    label_selector: str
    field_selector: str
    user: str | None


class WatchStream:
    """The state of one open watch; `run()` writes it until it ends."""

    def __init__(
        self,
        store: ObjectStore,
        resource: ResourceType,
        namespace: str | None,
        options: ListOptions,
        info: WatchInfo,
        *,
        bookmark_interval: float,
        timeout: float | None,
        wait_until_up: Callable[[], Awaitable[object]],
        as_table: bool = False,
    ) -> None:
        self.store = store
        self.resource = resource
        self.namespace = namespace
        self.options = options
        self.info = info
        self._bookmark_interval = bookmark_interval
        self._timeout = timeout
        self._wait_until_up = wait_until_up
        self._as_table = as_table
        self._wake = asyncio.Event()
        self._action: Action | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self, action: Action) -> None:
        self._action = action
        self._wake.set()

    async def run(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if not await self._stream(response):
                if request.transport is not None:
                    request.transport.abort()  # a cut mid-stream: no terminating chunk
                return response
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; nothing to tell it
        return response

    async def _send(self, response: web.StreamResponse, kind: str, obj: Mapping[str, Any]) -> None:
        if self._as_table and kind in ("ADDED", "MODIFIED", "DELETED"):
            # `kubectl get -w` asks for Tables: one row per event, each with its columns.
            obj = table_body(self.resource, [obj], None)
        await response.write(orjson.dumps({"type": kind, "object": obj}) + b"\n")

    async def _stream(self, response: web.StreamResponse) -> bool:
        """Write events until the stream should end; False if it must be cut, not ended."""
        loop = asyncio.get_running_loop()
        opts, store, resource = self.options, self.store, self.resource
        deadline = None if self._timeout is None else loop.time() + self._timeout
        bookmarks = opts.allow_watch_bookmarks
        next_bookmark = loop.time() + self._bookmark_interval
        if opts.resource_version in ("", "0") or opts.send_initial_events:
            # The current state as ADDED events, then everything after the version it was at.
            version = store.resource_version
            for obj in store.select(resource, namespace=self.namespace, selector=opts.selector):
                await self._send(response, "ADDED", obj)
            if opts.send_initial_events and bookmarks:
                await self._send(
                    response,
                    "BOOKMARK",
                    bookmark_object(resource, version, initial_events_end=True),
                )
        else:
            version = int(opts.resource_version)
        while True:
            self._wake.clear()
            if self._action is not None:
                return await self._finish(response, self._action, version)
            await self._wait_until_up()
            try:
                events = store.events_since(resource, version)
            except Expired as exc:
                await self._send(response, "ERROR", status_body(410, "Expired", str(exc)))
                return True
            # Read with the events, before any await lets another write in: every event of
            # this resource up to `head` is in `events`, so once they are sent a bookmark may
            # name `head` (as the cacher's bookmarks name its newest version).
            head = store.resource_version
            for event in events:
                seen = filter_event(event, self.namespace, opts.selector)
                if seen is not None:
                    await self._send(response, seen[0], seen[1])
                version = event.resource_version
            version = max(version, head)
            now = loop.time()
            if deadline is not None and now >= deadline:
                return True
            if bookmarks and now >= next_bookmark:
                await self._send(response, "BOOKMARK", bookmark_object(resource, version))
                next_bookmark = now + self._bookmark_interval
            wait_until = min(
                deadline if deadline is not None else float("inf"),
                next_bookmark if bookmarks else float("inf"),
            )
            timeout = None if wait_until == float("inf") else max(0.0, wait_until - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _finish(self, response: web.StreamResponse, action: Action, version: int) -> bool:
        if action == "expire":
            message = f"too old resource version: {version} ({self.store.resource_version})"
            await self._send(response, "ERROR", status_body(410, "Expired", message))
        return action != "abort"

"""Shared list/watch streams: one per watched thing, however many backends use it.

`KubeWatches.subscribe(key, callback)` starts a `ListWatch` on first use and stops it when
the last subscriber leaves. A ListWatch keeps the objects of one list/watch query by name
and calls every subscriber with the whole current map after each change:

- list, then watch from the list's resourceVersion, with bookmarks and a jittered
  `timeoutSeconds`; a watch the server ends normally is resumed from the last
  resourceVersion seen (a bookmark or an event);
- a broken stream or a failed request waits a jittered, doubling backoff, then resumes
  the watch (the objects it holds keep serving meanwhile);
- 410 Expired lists again and swaps the new map in at once: subscribers never see a
  half-built or empty map because of a hiccup, only the API's real state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from kedge.edge.discovery.kubernetes.api import Expired, KubeApi, KubeApiError

__all__ = ["KubeWatches", "ListWatch", "Query", "WatchSettings"]

log = logging.getLogger("kedge.kubernetes")

Objects = Mapping[str, Mapping[str, Any]]  # "<namespace>/<name>" -> object
Subscriber = Callable[[Objects], None]

_SHORT_WATCH = 1.0  # seconds: a watch that ends sooner with no event counts as a failure


@dataclass(frozen=True, slots=True)
class Query:
    """One list/watch: an API path (a namespaced or cluster-wide collection) and a label
    selector."""

    path: str
    label_selector: str = ""

    def __str__(self) -> str:
        return (
            f"{self.path}?labelSelector={self.label_selector}" if self.label_selector else self.path
        )


@dataclass(frozen=True, slots=True)
class WatchSettings:
    watch_timeout: float = 300.0  # timeoutSeconds asked of the server, jittered down to -25%
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


def _key(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return None
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) else None


class ListWatch:
    def __init__(
        self,
        api: KubeApi,
        query: Query,
        settings: WatchSettings,
        seed: Objects | None = None,
    ) -> None:
        self._api = api
        self.query = query
        self._settings = settings
        # None until the first list; or the last state a retired watch of the same query
        # knew (a reload that changed the API settings), served until this one lists.
        self.objects: dict[str, Mapping[str, Any]] | None = dict(seed) if seed else None
        self.subscribers: set[Subscriber] = set()
        self._resource_version = ""
        self.lists = 0
        self.watches = 0
        self.last_error = ""

    def _publish(self) -> None:
        objects = self.objects
        assert objects is not None
        for subscriber in list(self.subscribers):
            try:
                subscriber(objects)
            except Exception:  # one backend's bug must not stop the others' updates
                log.exception("kubernetes subscriber failed", extra={"query": str(self.query)})

    async def _list(self) -> None:
        self.lists += 1
        params = {"labelSelector": self.query.label_selector} if self.query.label_selector else {}
        body = await self._api.list(self.query.path, params)
        objects: dict[str, Mapping[str, Any]] = {}
        for item in body["items"]:
            if isinstance(item, dict) and (key := _key(item)) is not None:
                objects[key] = item
        meta = body.get("metadata") or {}
        self._resource_version = str(meta.get("resourceVersion") or "")
        self.objects = objects  # the swap: one assignment, then one publish
        self.last_error = ""
        self._publish()

    async def _watch(self) -> int:
        """One watch request until the server ends it; the number of events it brought."""
        self.watches += 1
        s = self._settings
        timeout = max(1, int(s.watch_timeout * random.uniform(0.75, 1.0)))
        params = {
            "resourceVersion": self._resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        if self.query.label_selector:
            params["labelSelector"] = self.query.label_selector
        objects = self.objects
        assert objects is not None
        events = 0
        async for event in self._api.watch(self.query.path, params, read_timeout=timeout + 30):
            events += 1
            kind, obj = event.get("type"), event["object"]
            if (rv := _resource_version(obj)) is not None:
                self._resource_version = rv
            if kind == "BOOKMARK":
                continue
            key = _key(obj)
            if key is None:
                continue
            if kind in ("ADDED", "MODIFIED"):
                objects[key] = obj
            elif kind == "DELETED":
                objects.pop(key, None)
            else:
                continue
            self._publish()
        return events

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self._settings.backoff_initial
        while True:
            try:
                if self.objects is None or not self._resource_version:
                    await self._list()
                started = loop.time()
                events = await self._watch()
                if events or loop.time() - started >= _SHORT_WATCH:
                    backoff = self._settings.backoff_initial  # a clean end (timeoutSeconds)
                    self.last_error = ""
                    continue
                # Ended at once with nothing in it (a proxy or an overloaded API server
                # closing streams): resuming at once would hammer the API in a tight loop,
                # so back off as after an error (client-go's reflector does the same).
                self.last_error = "the API server ended the watch at once, with no event"
                log.warning(
                    "kubernetes watch ended at once; backing off",
                    extra={"query": str(self.query)},
                )
            except Expired:
                log.info("watch expired; listing again", extra={"query": str(self.query)})
                self._resource_version = ""
                continue
            except asyncio.CancelledError:
                raise
            except (KubeApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                self.last_error = " ".join(str(exc).split())[:300] or type(exc).__name__
                log.warning(
                    "kubernetes watch failed; keeping the last state",
                    extra={"query": str(self.query), "error": self.last_error},
                )
            # Full jitter (AWS architecture blog): spreads a fleet's reconnects.
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, self._settings.backoff_max)


class KubeWatches:
    """The registry of shared ListWatches over one API connection."""

    def __init__(
        self, api: KubeApi, settings: WatchSettings, *, seed_from: KubeWatches | None = None
    ) -> None:
        self.api = api
        self.settings = settings
        self._watches: dict[Query, tuple[ListWatch, asyncio.Task[None]]] = {}
        # What the registry this one replaces knew, per query: a new watch starts from it,
        # so a reload during an API outage does not empty any backend.
        self._seed: dict[Query, Objects] = (
            {q: dict(w.objects) for q, (w, _t) in seed_from._watches.items() if w.objects}
            if seed_from is not None
            else {}
        )

    def subscribe(self, query: Query, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with the objects now (if listed) and after every change;
        the returned function unsubscribes."""
        entry = self._watches.get(query)
        if entry is None:
            watch = ListWatch(self.api, query, self.settings, self._seed.pop(query, None))
            task = asyncio.get_running_loop().create_task(watch.run(), name=f"kedge-watch {query}")
            entry = (watch, task)
            self._watches[query] = entry
        watch = entry[0]
        watch.subscribers.add(subscriber)
        if watch.objects is not None:
            subscriber(watch.objects)

        def unsubscribe() -> None:
            watch.subscribers.discard(subscriber)
            current = self._watches.get(query)
            if not watch.subscribers and current is not None and current[0] is watch:
                del self._watches[query]
                current[1].cancel()

        return unsubscribe

    def last_error(self, query: Query) -> str | None:
        entry = self._watches.get(query)
        return (entry[0].last_error or None) if entry is not None else None

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "query": str(q),
                "subscribers": len(w.subscribers),
                "objects": len(w.objects) if w.objects is not None else None,
                "lists": w.lists,
                "watches": w.watches,
                "last_error": w.last_error or None,
            }
            for q, (w, _task) in sorted(self._watches.items(), key=lambda kv: str(kv[0]))
        ]

    async def aclose(self) -> None:
        for _watch, task in list(self._watches.values()):
            task.cancel()
        for _watch, task in list(self._watches.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watches.clear()
        await self.api.aclose()

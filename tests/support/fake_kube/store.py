"""A versioned object store with the Kubernetes watch-cache semantics the fake serves (pure).

One global resourceVersion counter (as etcd's revision): every create, update and delete bumps
it and stamps the object. Each resource type keeps a bounded history of events; a watch or an
exact list from a resourceVersion older than that history raises `Expired` (HTTP 410 upstream).
`compact()` drops the histories, as an etcd compaction does. An update that changes nothing
is a no-op (no new resourceVersion, no event), as upstream.

Objects are JSON-like dicts. The store copies what it is given and never mutates a stored
object afterwards, so readers may hold the dicts it returns but must not change them.

`filter_event` turns a stored event into what one watch with a namespace and selectors sees: the
cacher's rules, so an object relabelled out of a selector arrives as DELETED (its previous content
with the new resourceVersion) and one relabelled into it as ADDED.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .resources import RESOURCES, ResourceType, resource_for_kind
from .selector import EVERYTHING, Selector

__all__ = [
    "AlreadyExists",
    "Conflict",
    "EventType",
    "Expired",
    "Invalid",
    "NotFound",
    "Object",
    "ObjectStore",
    "StoreError",
    "StoredEvent",
    "TooLargeResourceVersion",
    "filter_event",
]

Object = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Key = tuple[str, str]  # (namespace or "", name)


class StoreError(Exception):
    """A refused store operation; `reason` and `code` are the Kubernetes Status fields."""

    reason = "InternalError"
    code = 500


class NotFound(StoreError):
    reason, code = "NotFound", 404


class AlreadyExists(StoreError):
    reason, code = "AlreadyExists", 409


class Conflict(StoreError):
    reason, code = "Conflict", 409


class Invalid(StoreError):
    reason, code = "Invalid", 422


class Expired(StoreError):
    """The requested resourceVersion is older than the retained history (HTTP 410 Gone)."""

    reason, code = "Expired", 410

    def __init__(self, requested: int, oldest: int) -> None:
        # The same wording as the apiserver's watch cache, which clients log and match on.
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class TooLargeResourceVersion(StoreError):
    reason, code = "Timeout", 504

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"Too large resource version: {requested}, current: {current}")


@dataclass(frozen=True)
class StoredEvent:
    """One change. For DELETED, `object` is the last state stamped with the deletion's version."""

    type: EventType
    resource_version: int
    object: Mapping[str, Any]
    previous: Mapping[str, Any] | None  # None for ADDED


@dataclass
class _Table:
    """One resource type's objects and history (mutable; private to the store)."""

    objects: dict[Key, Object] = field(default_factory=dict)
    history: deque[StoredEvent] = field(default_factory=deque)
    # Every event of this type with a resourceVersion above `floor` is still in `history`.
    floor: int = 0


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ObjectStore:
    """All objects of the fake API server, with per-type event histories."""

    def __init__(
        self,
        resources: Sequence[ResourceType] = RESOURCES,
        *,
        history_limit: int = 10_000,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.resources = tuple(resources)
        self._tables = {r: _Table() for r in self.resources}
        self._history_limit = history_limit
        self._clock = clock
        self._version = 0

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion handed out (0 before the first write)."""
        return self._version

    def oldest_resource_version(self, resource: ResourceType) -> int:
        """The oldest resourceVersion a watch on `resource` can still start from."""
        return self._tables[resource].floor

    def resource_of(self, obj: Mapping[str, Any]) -> ResourceType:
        try:
            return resource_for_kind(obj.get("kind", ""), obj.get("apiVersion", ""), self.resources)
        except KeyError as exc:
            raise Invalid(str(exc)) from None

    # -- reads ---------------------------------------------------------------------------------

    def get(self, resource: ResourceType, namespace: str | None, name: str) -> Object | None:
        return self._tables[resource].objects.get(_key(resource, namespace, name))

    def select(
        self,
        resource: ResourceType,
        *,
        namespace: str | None = None,
        selector: Selector = EVERYTHING,
        at: int | None = None,
    ) -> list[Object]:
        """Matching objects sorted by (namespace, name), now or as they were at version `at`."""
        table = self._tables[resource]
        objects = table.objects if at is None else self._objects_at(resource, at)
        return [
            obj
            for key, obj in sorted(objects.items())
            if (namespace is None or key[0] == namespace) and selector.matches(obj)
        ]

    def events_since(self, resource: ResourceType, version: int) -> list[StoredEvent]:
        """The events of `resource` after `version`, oldest first; Expired if some are gone."""
        table = self._tables[resource]
        if version < table.floor:
            raise Expired(version, table.floor)
        newer: list[StoredEvent] = []
        for event in reversed(table.history):
            if event.resource_version <= version:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def _objects_at(self, resource: ResourceType, version: int) -> dict[Key, Object]:
        """Rewind the current objects to `version` by undoing the newer events."""
        if version > self._version:
            raise TooLargeResourceVersion(version, self._version)
        objects = dict(self._tables[resource].objects)
        for event in reversed(self.events_since(resource, version)):
            key = _key(resource, _namespace_of(event.object), _name_of(event.object))
            if event.previous is None:
                objects.pop(key, None)
            else:
                objects[key] = dict(event.previous)
        return objects

    # -- writes --------------------------------------------------------------------------------

    def create(self, obj: Mapping[str, Any]) -> StoredEvent:
        resource = self.resource_of(obj)
        new = copy.deepcopy(dict(obj))
        meta = new.setdefault("metadata", {})
        namespace, name = self._identify(resource, new)
        key = (namespace, name)
        if key in self._tables[resource].objects:
            raise AlreadyExists(f'{resource.plural} "{name}" already exists')
        version = self._version + 1
        meta.pop("deletionTimestamp", None)
        meta["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{resource.plural}/{key}/{version}"))
        meta["creationTimestamp"] = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["generation"] = 1
        return self._commit(resource, key, "ADDED", new, None)

    def replace(self, obj: Mapping[str, Any]) -> StoredEvent | None:
        """Update an existing object; a resourceVersion in it must be the current one (409).

        Returns None when nothing changed, as the apiserver then writes nothing."""
        resource = self.resource_of(obj)
        new = copy.deepcopy(dict(obj))
        meta = new.setdefault("metadata", {})
        namespace, name = self._identify(resource, new)
        key = (namespace, name)
        old = self._tables[resource].objects.get(key)
        if old is None:
            raise NotFound(f'{resource.plural} "{name}" not found')
        old_meta = old["metadata"]
        expected = meta.get("resourceVersion")
        if expected not in (None, "") and str(expected) != old_meta["resourceVersion"]:
            raise Conflict(
                f'Operation cannot be fulfilled on {resource.plural} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again"
            )
        for kept in ("uid", "creationTimestamp", "resourceVersion", "generation"):
            meta[kept] = old_meta[kept]
        if new == old:
            return None
        if _spec_of(new) != _spec_of(old):
            meta["generation"] = old_meta["generation"] + 1
        return self._commit(resource, key, "MODIFIED", new, old)

    def apply(self, obj: Mapping[str, Any]) -> StoredEvent | None:
        """Create the object or replace it whatever its resourceVersion (a forced update)."""
        resource = self.resource_of(obj)
        new = copy.deepcopy(dict(obj))
        namespace, name = self._identify(resource, new)
        if (namespace, name) not in self._tables[resource].objects:
            return self.create(new)
        new["metadata"].pop("resourceVersion", None)
        return self.replace(new)

    def delete(self, resource: ResourceType, namespace: str | None, name: str) -> StoredEvent:
        key = _key(resource, namespace, name)
        old = self._tables[resource].objects.get(key)
        if old is None:
            raise NotFound(f'{resource.plural} "{name}" not found')
        return self._commit(resource, key, "DELETED", None, old)

    def compact(self) -> None:
        """Forget every event so far: watches and exact lists from older versions get 410."""
        for table in self._tables.values():
            table.history.clear()
            table.floor = self._version

    def _identify(self, resource: ResourceType, obj: Object) -> Key:
        """Check and normalise the object's identity and type fields; return its key."""
        meta = obj["metadata"]
        name = meta.get("name")
        if not name and meta.get("generateName"):
            # Upstream appends 5 random characters; a counter-derived suffix keeps this pure.
            name = f"{meta['generateName']}{self._version + 1:05d}"
            meta["name"] = name
        if not isinstance(name, str) or not name:
            raise Invalid(f"{resource.kind}: metadata.name: Required value: name is required")
        if resource.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        obj["kind"] = resource.kind
        obj["apiVersion"] = resource.api_version
        return (meta.get("namespace", ""), name)

    def _commit(
        self,
        resource: ResourceType,
        key: Key,
        kind: EventType,
        new: Object | None,
        old: Object | None,
    ) -> StoredEvent:
        self._version += 1
        version = str(self._version)
        table = self._tables[resource]
        if new is None:  # deletion: the watch sees the last state at the deletion's version
            assert old is not None
            del table.objects[key]
            shown: Object = {**old, "metadata": {**old["metadata"], "resourceVersion": version}}
        else:
            new["metadata"]["resourceVersion"] = version
            table.objects[key] = new
            shown = new
        event = StoredEvent(kind, self._version, shown, old)
        table.history.append(event)
        while len(table.history) > self._history_limit:
            table.floor = table.history.popleft().resource_version
        return event


def filter_event(
    event: StoredEvent, namespace: str | None, selector: Selector
) -> tuple[EventType, Mapping[str, Any]] | None:
    """What a watch on `namespace` (None: all) with `selector` sees of `event`, if anything."""

    def passes(obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        if namespace is not None and _namespace_of(obj) != namespace:
            return False
        return selector.matches(obj)

    now = event.type != "DELETED" and passes(event.object)
    before = passes(event.previous)
    if now:
        return ("MODIFIED" if before else "ADDED"), event.object
    if before:
        assert event.previous is not None
        version = str(event.resource_version)
        previous = event.previous
        return "DELETED", {
            **previous,
            "metadata": {**previous["metadata"], "resourceVersion": version},
        }
    return None


def _key(resource: ResourceType, namespace: str | None, name: str) -> Key:
    return ((namespace or "default") if resource.namespaced else "", name)


def _namespace_of(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("namespace", ""))


def _name_of(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything but metadata and status: what bumps metadata.generation when it changes."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

"""The fake Kubernetes API's request log: what each request asked for, classified (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .protocol import Verb, parse_api_path
from .resources import ResourceType

__all__ = ["RequestRecord", "classify", "count"]


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it (logged before it was answered)."""

    method: str
    path: str
    query: Mapping[str, str]
    verb: Verb
    resource: str | None  # plural, for resource paths
    namespace: str | None
    name: str | None
    user: str | None  # None: refused as unauthenticated

    @property
    def is_watch(self) -> bool:
        return self.verb == "watch"


def classify(
    method: str,
    path: str,
    query: Mapping[str, str],
    user: str | None,
    resources: Sequence[ResourceType],
) -> RequestRecord:
    """Name the verb as the apiserver's RBAC would: get, list or watch on a resource path,
    discovery for /version, /api and /apis documents, other for the rest."""
    target = parse_api_path(path, resources)
    verb: Verb = "other"
    if target is not None:
        if query.get("watch", "").lower() in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if target.name else "list"
    elif path.rstrip("/") in ("/version", "/api", "/apis") or path.startswith(("/api/", "/apis/")):
        verb = "discovery"
    return RequestRecord(
        method,
        path,
        dict(query),
        verb,
        target.resource.plural if target else None,
        target.namespace if target else None,
        target.name if target else None,
        user,
    )


def count(
    records: Iterable[RequestRecord],
    verb: Verb | None = None,
    resource: str | None = None,
    namespace: str | None = None,
) -> int:
    """How many records match every given field (None matches anything)."""
    return sum(
        1
        for r in records
        if (verb is None or r.verb == verb)
        and (resource is None or r.resource == resource)
        and (namespace is None or r.namespace == namespace)
    )

"""The wire shapes of the fake Kubernetes API: paths, list options, Status, lists, bookmarks (pure).

Facts from the real apiserver that clients notice and that this module reproduces:
- list items carry no `kind`/`apiVersion` (the typed list drops their TypeMeta); the list itself
  has `<Kind>List`, and watch events and single GETs carry both;
- errors are `Status` objects whose `reason` and `code` clients switch on (401 Unauthorized,
  404 NotFound, 410 Expired, ...);
- a continue token is base64 of `{"v": "meta.k8s.io/v1", "rv": N, "start": "<key>"}` and pins
  the list to version N, so it expires (410) when N has been compacted;
- bookmarks carry only the resourceVersion plus the kind's zero-valued fields.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .resources import ResourceType, resource_for_path
from .selector import Selector, SelectorError, parse_field_selector, parse_label_selector

__all__ = [
    "ApiPath",
    "BadRequest",
    "ListOptions",
    "Verb",
    "bookmark_object",
    "decode_continue",
    "encode_continue",
    "list_body",
    "parse_api_path",
    "parse_list_options",
    "status_body",
    "without_type",
]

Verb = Literal["get", "list", "watch", "discovery", "other"]

# Zero-valued fields the apiserver serialises in a bookmark (an empty object of the kind).
_BOOKMARK_ZERO: Mapping[str, Mapping[str, Any]] = {
    "endpointslices": {"addressType": "", "endpoints": None},
    "services": {"spec": {}, "status": {"loadBalancer": {}}},
    "pods": {"spec": {"containers": None}, "status": {}},
    "namespaces": {"spec": {}, "status": {}},
    "endpoints": {},
}


class BadRequest(ValueError):
    """A malformed query (HTTP 400, reason BadRequest)."""


@dataclass(frozen=True)
class ApiPath:
    """A resource URL taken apart: collection (`name` None) or one object."""

    resource: ResourceType
    namespace: str | None  # None: all namespaces (or a cluster-scoped resource)
    name: str | None


def parse_api_path(path: str, resources: Sequence[ResourceType]) -> ApiPath | None:
    """Match `/api/v1[/namespaces/{ns}]/{plural}[/{name}]` or the `/apis/{group}/...` form."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if len(rest) not in (1, 2):
        return None
    resource = resource_for_path(group, version, rest[0], resources)
    if resource is None or (namespace is not None and not resource.namespaced):
        return None
    return ApiPath(resource, namespace, rest[1] if len(rest) == 2 else None)


@dataclass(frozen=True)
class ListOptions:
    """The query parameters of a list or watch (metav1.ListOptions)."""

    selector: Selector = field(default_factory=Selector)
    resource_version: str = ""
    resource_version_match: str = ""
    limit: int = 0
    continue_token: str = ""
    watch: bool = False
    timeout_seconds: int | None = None
    allow_watch_bookmarks: bool = False
    send_initial_events: bool = False


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def _integer(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{name}: invalid value {text!r}: must be an integer") from None


def parse_list_options(query: Mapping[str, str]) -> ListOptions:
    try:
        selector = Selector(
            parse_label_selector(query.get("labelSelector", "")),
            parse_field_selector(query.get("fieldSelector", "")),
        )
    except SelectorError as exc:
        raise BadRequest(str(exc)) from None
    rv = query.get("resourceVersion", "")
    match = query.get("resourceVersionMatch", "")
    if rv and rv != "0" and not rv.isdigit():
        raise BadRequest(f"resourceVersion: Invalid value: {rv!r}: must be an integer")
    if match and not rv:
        raise BadRequest("resourceVersionMatch is forbidden unless resourceVersion is provided")
    if match not in ("", "Exact", "NotOlderThan"):
        raise BadRequest(f"resourceVersionMatch: Unsupported value: {match!r}")
    if match == "Exact" and rv == "0":
        raise BadRequest('resourceVersionMatch "Exact" is forbidden for resourceVersion "0"')
    limit = _integer(query, "limit") or 0
    options = ListOptions(
        selector=selector,
        resource_version=rv,
        resource_version_match=match,
        limit=max(limit, 0),
        continue_token=query.get("continue", ""),
        watch=_flag(query.get("watch")),
        timeout_seconds=_integer(query, "timeoutSeconds"),
        allow_watch_bookmarks=_flag(query.get("allowWatchBookmarks")),
        send_initial_events=_flag(query.get("sendInitialEvents")),
    )
    if options.continue_token and rv:
        raise BadRequest("specifying resource version is not allowed when using continue")
    return options


def status_body(
    code: int, reason: str, message: str, *, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A metav1.Status failure, the body of every error the apiserver returns."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


def without_type(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as it appears among a list's items: no kind, no apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def list_body(
    resource: ResourceType,
    items: Sequence[Mapping[str, Any]],
    resource_version: int,
    *,
    continue_token: str = "",
    remaining: int | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if continue_token:
        metadata["continue"] = continue_token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
    return {
        "kind": resource.list_kind,
        "apiVersion": resource.api_version,
        "metadata": metadata,
        "items": [without_type(item) for item in items],
    }


def encode_continue(resource_version: int, start_after: str) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": resource_version, "start": start_after}
    return base64.b64encode(json.dumps(token, separators=(",", ":")).encode()).decode()


def decode_continue(token: str) -> tuple[int, str]:
    """The (resourceVersion, key to start after) a continue token pins; BadRequest if garbled."""
    try:
        data = json.loads(base64.b64decode(token, validate=True))
        version, start = data["rv"], data["start"]
        if data.get("v") != "meta.k8s.io/v1" or not isinstance(version, int):
            raise ValueError
        return version, str(start)
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadRequest(
            "continue key is not valid: incorrect encoded start resourceVersion"
        ) from None


def bookmark_object(
    resource: ResourceType, resource_version: int, *, initial_events_end: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": str(resource_version), "creationTimestamp": None}
    if initial_events_end:
        metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {
        "kind": resource.kind,
        "apiVersion": resource.api_version,
        "metadata": metadata,
        **_BOOKMARK_ZERO.get(resource.plural, {}),
    }

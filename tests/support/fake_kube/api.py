"""The read side of the fake Kubernetes API as aiohttp handlers: discovery, get, list, watch.

`ApiHandlers.handle(request, user)` answers one authenticated request. Everything but watches is
a single JSON document; errors are Status objects with the real server's reasons and codes.
The request-to-answer logic stays in pure helpers (protocol.py, store.py) so this module only
routes and serialises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from .discovery import (
    AGGREGATED_CONTENT_TYPE,
    aggregated_discovery,
    api_group,
    api_group_list,
    api_resource_list,
    api_versions,
    version_info,
    wants_aggregated,
)
from .protocol import (
    ApiPath,
    BadRequest,
    ListOptions,
    decode_continue,
    encode_continue,
    list_body,
    parse_list_options,
    status_body,
)
from .resources import ResourceType
from .selector import FieldRequirement, FieldSelector, Selector
from .store import Expired, ObjectStore, StoreError, TooLargeResourceVersion
from .tables import table_body, wants_table
from .watch import WatchInfo, WatchStream

__all__ = ["USER", "ApiHandlers", "json_response", "not_found_response", "status_response"]

USER = web.RequestKey("user", str)  # the authenticated user, set before a handler runs

_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter."
)


def json_response(
    body: Mapping[str, Any], status: int = 200, content_type: str = "application/json"
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), headers={"Content-Type": content_type}
    )


def status_response(code: int, reason: str, message: str, **details: Any) -> web.Response:
    return json_response(status_body(code, reason, message, details=details or None), code)


def not_found_response() -> web.Response:
    return status_response(404, "NotFound", "the server could not find the requested resource")


class ApiHandlers:
    """Answers requests from the store; `start_watch` registers and runs a watch stream."""

    def __init__(
        self,
        store: ObjectStore,
        server_address: Callable[[], str],
        start_watch: Callable[[web.Request, WatchStream], Awaitable[web.StreamResponse]],
        make_watch: Callable[[ResourceType, str | None, ListOptions, WatchInfo, bool], WatchStream],
    ) -> None:
        self.store = store
        self._server_address = server_address
        self._start_watch = start_watch
        self._make_watch = make_watch

    @property
    def resources(self) -> Sequence[ResourceType]:
        return self.store.resources

    def discovery(self, request: web.Request) -> web.Response | None:
        """The discovery document at the request's path, or None if it is not a discovery path."""
        path = request.path.rstrip("/")
        accept = request.headers.get("Accept", "")
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            return json_response(version_info())
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok", content_type="text/plain")
        if path in ("/api", "/apis") and wants_aggregated(accept):
            body = aggregated_discovery(self.resources, legacy=path == "/api")
            return json_response(body, content_type=AGGREGATED_CONTENT_TYPE)
        if path == "/api":
            return json_response(api_versions(self._server_address()))
        if path == "/apis":
            return json_response(api_group_list(self.resources))
        if len(parts) == 2 and parts[0] == "api":
            doc = api_resource_list(self.resources, "", parts[1])
            return not_found_response() if doc is None else json_response(doc)
        if len(parts) == 2 and parts[0] == "apis":
            if not any(r.group == parts[1] for r in self.resources):
                return not_found_response()
            return json_response(api_group(self.resources, parts[1]))
        if len(parts) == 3 and parts[0] == "apis":
            doc = api_resource_list(self.resources, parts[1], parts[2])
            return not_found_response() if doc is None else json_response(doc)
        return None

    async def resource(self, request: web.Request, target: ApiPath) -> web.StreamResponse:
        if request.method != "GET":
            return status_response(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        query = {k: request.query[k] for k in request.query}
        try:
            options = parse_list_options(query)
        except BadRequest as exc:
            return status_response(400, "BadRequest", str(exc))
        resource = target.resource
        if target.name is not None and options.watch:
            # A watch on one object is a watch on the collection with a name field selector.
            one = FieldRequirement("metadata.name", "=", target.name)
            fields = FieldSelector((*options.selector.fields.requirements, one))
            selector = Selector(options.selector.labels, fields)
            options = ListOptions(**{**options.__dict__, "selector": selector})
        table = wants_table(request.headers.get("Accept", ""))
        if options.watch:
            info = WatchInfo(
                resource.plural,
                target.namespace,
                query.get("labelSelector", ""),
                query.get("fieldSelector", ""),
                request.get(USER),
            )
            watch = self._make_watch(resource, target.namespace, options, info, table)
            return await self._start_watch(request, watch)
        if target.name is not None:
            obj = self.store.get(resource, target.namespace, target.name)
            if obj is None:
                details: dict[str, Any] = {"name": target.name, "kind": resource.plural}
                if resource.group:
                    details["group"] = resource.group
                message = f'{resource.plural}{_group_suffix(resource)} "{target.name}" not found'
                return status_response(404, "NotFound", message, **details)
            if table:
                return json_response(table_body(resource, [obj], None))
            return json_response(obj)
        try:
            body = self._list(resource, target.namespace, options)
        except Expired:
            if options.continue_token:
                return status_response(410, "Expired", _CONTINUE_EXPIRED)
            return status_response(
                410, "Expired", "The resourceVersion for the provided list is too old."
            )
        except TooLargeResourceVersion as exc:
            return status_response(
                504,
                "Timeout",
                str(exc),
                causes=[
                    {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
                ],
            )
        except (BadRequest, StoreError) as exc:
            return status_response(400, "BadRequest", str(exc))
        if table:
            return json_response(table_body(resource, body["items"], body["metadata"]))
        return json_response(body)

    def _list(
        self, resource: ResourceType, namespace: str | None, options: ListOptions
    ) -> dict[str, Any]:
        store = self.store
        start_after: tuple[str, str] | None = None
        at: int | None = None
        if options.continue_token:
            at, start = decode_continue(options.continue_token)
            ns, _, name = start.partition("/")
            start_after = (ns, name)
        elif options.resource_version_match == "Exact":
            at = int(options.resource_version)
        elif (
            options.resource_version not in ("", "0")
            and int(options.resource_version) > store.resource_version
        ):
            raise TooLargeResourceVersion(int(options.resource_version), store.resource_version)
        items = store.select(resource, namespace=namespace, selector=options.selector, at=at)
        version = store.resource_version if at is None else at
        if start_after is not None:
            items = [i for i in items if _key_of(i) > start_after]
        if not options.limit or len(items) <= options.limit:
            return list_body(resource, items, version)
        page = items[: options.limit]
        last_ns, last_name = _key_of(page[-1])
        # The apiserver reports remainingItemCount only for unfiltered lists.
        unfiltered = options.selector == Selector()
        return list_body(
            resource,
            page,
            version,
            continue_token=encode_continue(version, f"{last_ns}/{last_name}"),
            remaining=len(items) - options.limit if unfiltered else None,
        )


def _key_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def _group_suffix(resource: ResourceType) -> str:
    return f".{resource.group}" if resource.group else ""

"""A faithful fake of the Kubernetes API server for kedge's tests (discovery, list, watch, 410s).

`FakeKube` is the server and its control API; `objects` builds Services, EndpointSlices and
Pods; `ObjectStore` and the selector parsers are the pure semantics under it. A test reads:

    async with FakeKube(bookmark_interval=0.2) as kube:       # HTTPS, token DEFAULT_TOKEN
        kube.apply(service("web", "apps", ports=[Port("http", 80, 8080)]))
        kube.apply(endpoint_slice("web-x1", "apps", service="web",
                                  endpoints=[endpoint("10.0.0.1", zone="a")],
                                  ports=[Port("http", 8080)]))
        config = kube.write_kubeconfig(tmp_path / "kubeconfig")   # for kubectl / kubernetes_asyncio
        ...
        await kube.wait_for_watches(1, "endpointslices")
        kube.compact(); kube.expire_watches()                  # the client must relist
        await kube.go_down(); ...; await kube.come_back()      # an outage, same port
        assert kube.count_requests("watch", "endpointslices") == 2

What it does not do: writes over HTTP (405; tests write through the control API), protobuf or
CBOR (it always answers JSON, which every client also accepts), HTTP/2, OpenAPI documents
(`kubectl apply --dry-run=client` needs `--validate=false`), RBAC (every authenticated user
may read everything), field selectors beyond metadata.name/metadata.namespace, namespace
deletion cascading, and the server-side defaulting of objects not built with `objects`.
"""

from __future__ import annotations

from .credentials import ClientCert, KubeTls, write_kubeconfig
from .objects import Port, endpoint, endpoint_slice, endpoints, namespace, pod, service
from .request_log import RequestRecord
from .resources import (
    ENDPOINT_SLICES,
    ENDPOINTS,
    NAMESPACES,
    PODS,
    RESOURCES,
    SERVICES,
    ResourceType,
)
from .selector import Selector, SelectorError, parse_field_selector, parse_label_selector
from .server import DEFAULT_TOKEN, FakeKube
from .store import (
    AlreadyExists,
    Conflict,
    Expired,
    NotFound,
    ObjectStore,
    StoredEvent,
    StoreError,
    filter_event,
)
from .watch import WatchInfo

__all__ = [
    "DEFAULT_TOKEN",
    "ENDPOINTS",
    "ENDPOINT_SLICES",
    "NAMESPACES",
    "PODS",
    "RESOURCES",
    "SERVICES",
    "AlreadyExists",
    "ClientCert",
    "Conflict",
    "Expired",
    "FakeKube",
    "KubeTls",
    "NotFound",
    "ObjectStore",
    "Port",
    "RequestRecord",
    "ResourceType",
    "Selector",
    "SelectorError",
    "StoreError",
    "StoredEvent",
    "WatchInfo",
    "endpoint",
    "endpoint_slice",
    "endpoints",
    "filter_event",
    "namespace",
    "parse_field_selector",
    "parse_label_selector",
    "pod",
    "service",
    "write_kubeconfig",
]

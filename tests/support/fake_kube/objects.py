"""Builders for the objects tests put in the fake API: Services, EndpointSlices, Pods, ... (pure).

They return plain dicts shaped like what the apiserver stores for objects made by the usual
controllers (defaults filled in: clusterIPs, ipFamilies, sessionAffinity, the EndpointSlice
`kubernetes.io/service-name` and managed-by labels, `serving` following `ready`), so clients
parse them as they would parse real ones. The store adds uid, creationTimestamp,
resourceVersion and generation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SERVICE_NAME_LABEL",
    "Port",
    "endpoint",
    "endpoint_slice",
    "endpoints",
    "namespace",
    "pod",
    "service",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


@dataclass(frozen=True)
class Port:
    """A named port. On a Service `port` is the service port and `target_port` the pods' one;
    on an EndpointSlice or Endpoints only `port` (the pods' port) is used."""

    name: str
    port: int
    target_port: int | str | None = None
    protocol: str = "TCP"
    app_protocol: str | None = None

    def _common(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "port": self.port, "protocol": self.protocol}
        if self.app_protocol is not None:
            out["appProtocol"] = self.app_protocol
        return out

    def for_service(self) -> dict[str, Any]:
        target = self.port if self.target_port is None else self.target_port
        return {**self._common(), "targetPort": target}

    def for_endpoints(self) -> dict[str, Any]:
        return self._common()


def _metadata(
    name: str,
    namespace: str | None,
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def namespace(name: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": _metadata(
            name, None, {"kubernetes.io/metadata.name": name, **(labels or {})}, None
        ),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def service(
    name: str,
    namespace: str = "default",
    *,
    ports: Sequence[Port] = (),
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    selector: Mapping[str, str] | None = None,
    cluster_ip: str = "10.96.0.10",
    type: str = "ClusterIP",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ports": [p.for_service() for p in ports],
        "selector": dict(selector) if selector is not None else {"app": name},
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "type": type,
        "sessionAffinity": "None",
        "ipFamilies": ["IPv6" if ":" in cluster_ip else "IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": _metadata(name, namespace, labels, annotations),
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def endpoint(
    *addresses: str,
    ready: bool = True,
    serving: bool | None = None,
    terminating: bool = False,
    zone: str | None = None,
    node_name: str | None = None,
    hostname: str | None = None,
    pod: str | None = None,
    pod_namespace: str | None = None,
) -> dict[str, Any]:
    """One EndpointSlice endpoint. `serving` defaults to `ready` (they differ only while
    terminating); `pod` adds a targetRef to that Pod (namespace: `pod_namespace`, or the
    slice's when built through `endpoint_slice`)."""
    out: dict[str, Any] = {
        "addresses": list(addresses),
        "conditions": {
            "ready": ready,
            "serving": ready if serving is None else serving,
            "terminating": terminating,
        },
    }
    if hostname is not None:
        out["hostname"] = hostname
    if pod is not None:
        ref = {"kind": "Pod", "name": pod}
        if pod_namespace is not None:
            ref["namespace"] = pod_namespace
        out["targetRef"] = ref
    if node_name is not None:
        out["nodeName"] = node_name
    if zone is not None:
        out["zone"] = zone
    return out


def endpoint_slice(
    name: str,
    namespace: str = "default",
    *,
    service: str,
    endpoints: Sequence[Mapping[str, Any]] = (),
    ports: Sequence[Port] = (),
    address_type: str = "IPv4",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A slice of `service` as the EndpointSlice controller writes it."""
    items: list[dict[str, Any]] = []
    for source in endpoints:
        item = dict(source)
        if "targetRef" in item and "namespace" not in item["targetRef"]:
            item["targetRef"] = {**item["targetRef"], "namespace": namespace}
        items.append(item)
    all_labels = {SERVICE_NAME_LABEL: service, _MANAGED_BY: "endpointslice-controller.k8s.io"}
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": _metadata(name, namespace, {**all_labels, **(labels or {})}, None),
        "addressType": address_type,
        "endpoints": items,
        "ports": [p.for_endpoints() for p in ports],
    }


def endpoints(
    name: str,
    namespace: str = "default",
    *,
    addresses: Sequence[str] = (),
    not_ready: Sequence[str] = (),
    ports: Sequence[Port] = (),
) -> dict[str, Any]:
    """The deprecated core v1 Endpoints of a Service: one subset."""
    subset: dict[str, Any] = {"ports": [p.for_endpoints() for p in ports]}
    if addresses:
        subset["addresses"] = [{"ip": a} for a in addresses]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": a} for a in not_ready]
    return {
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": _metadata(name, namespace, None, None),
        "subsets": [subset] if addresses or not_ready else [],
    }


def pod(
    name: str,
    namespace: str = "default",
    *,
    ip: str = "10.0.0.1",
    labels: Mapping[str, str] | None = None,
    node_name: str = "node-a",
    ready: bool = True,
    phase: str = "Running",
    containers: Sequence[str] = ("app",),
) -> dict[str, Any]:
    condition = "True" if ready else "False"
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": _metadata(name, namespace, labels, None),
        "spec": {
            "containers": [{"name": c, "image": f"{c}:test"} for c in containers],
            "nodeName": node_name,
            "restartPolicy": "Always",
        },
        "status": {
            "phase": phase,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": condition}],
            "containerStatuses": [
                {"name": c, "ready": ready, "restartCount": 0, "image": f"{c}:test"}
                for c in containers
            ],
        },
    }

"""Server-side table printing (`meta.k8s.io/v1` Table), which plain `kubectl get` asks for (pure).

kubectl's default output sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...` and
prints the rows the server computed. The columns here follow the apiserver's printers for the
kinds the fake serves (NAME, TYPE, CLUSTER-IP, ... for Services; NAME, READY, STATUS, ... for
Pods); rows carry the object's metadata as a PartialObjectMetadata (`includeObject=Metadata`,
the default), from which kubectl takes the namespace column of `-A` and `--show-labels`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .resources import ResourceType

__all__ = ["human_age", "table_body", "wants_table"]

Row = Callable[[Mapping[str, Any], str], list[Any]]  # (object, age) -> cells


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def human_age(created: str, now: dt.datetime) -> str:
    """apimachinery's HumanDuration of the object's age (`45s`, `5m30s`, `3h`, `12d`)."""
    try:
        then = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _column(name: str, type_: str = "string", fmt: str = "", priority: int = 0) -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": priority}


def _service(obj: Mapping[str, Any], age: str) -> list[Any]:
    spec = obj.get("spec", {})
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", []))
    ingress = obj.get("status", {}).get("loadBalancer", {}).get("ingress", [])
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress)
    if not external:
        external = "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    selector = ",".join(f"{k}={v}" for k, v in sorted(spec.get("selector", {}).items()))
    return [
        obj["metadata"]["name"],
        spec.get("type", ""),
        spec.get("clusterIP", "<none>"),
        external,
        ports or "<none>",
        age,
        selector or "<none>",
    ]


def _pod(obj: Mapping[str, Any], age: str) -> list[Any]:
    statuses = obj.get("status", {}).get("containerStatuses", [])
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    total = len(obj.get("spec", {}).get("containers") or [])
    phase = obj.get("status", {}).get("phase", "")
    return [obj["metadata"]["name"], f"{ready}/{total}", phase, restarts, age]


def _endpoint_slice(obj: Mapping[str, Any], age: str) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in obj.get("ports") or [])
    addresses = [a for e in obj.get("endpoints") or [] for a in e.get("addresses", [])]
    shown = ",".join(addresses[:3])
    if len(addresses) > 3:
        shown += f" + {len(addresses) - 3} more..."
    return [
        obj["metadata"]["name"],
        obj.get("addressType", ""),
        ports or "<unset>",
        shown or "<unset>",
        age,
    ]


def _namespace(obj: Mapping[str, Any], age: str) -> list[Any]:
    return [obj["metadata"]["name"], obj.get("status", {}).get("phase", ""), age]


def _default(obj: Mapping[str, Any], age: str) -> list[Any]:
    return [obj["metadata"]["name"], age]


_PRINTERS: Mapping[str, tuple[Sequence[dict[str, Any]], Row]] = {
    "services": (
        [
            _column("Name", fmt="name"),
            _column("Type"),
            _column("Cluster-IP"),
            _column("External-IP"),
            _column("Port(s)"),
            _column("Age"),
            _column("Selector", priority=1),
        ],
        _service,
    ),
    "pods": (
        [
            _column("Name", fmt="name"),
            _column("Ready"),
            _column("Status"),
            _column("Restarts", "integer"),
            _column("Age"),
        ],
        _pod,
    ),
    "endpointslices": (
        [
            _column("Name", fmt="name"),
            _column("AddressType"),
            _column("Ports"),
            _column("Endpoints"),
            _column("Age"),
        ],
        _endpoint_slice,
    ),
    "namespaces": ([_column("Name", fmt="name"), _column("Status"), _column("Age")], _namespace),
}
_DEFAULT = ([_column("Name", fmt="name"), _column("Age")], _default)


def table_body(
    resource: ResourceType,
    objects: Sequence[Mapping[str, Any]],
    list_metadata: Mapping[str, Any] | None,
    *,
    now: dt.datetime | None = None,
    with_columns: bool = True,
) -> dict[str, Any]:
    """A Table of `objects`; `list_metadata` (resourceVersion, continue) for a list."""
    now = now or dt.datetime.now(dt.UTC)
    columns, row = _PRINTERS.get(resource.plural, _DEFAULT)
    rows = [
        {
            "cells": row(obj, human_age(obj["metadata"].get("creationTimestamp", ""), now)),
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            },
        }
        for obj in objects
    ]
    body: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_metadata or {}),
        "columnDefinitions": list(columns) if with_columns else None,
        "rows": rows,
    }
    return body

"""Discovery documents of the fake Kubernetes API: /version, /api, /apis and group versions (pure).

Both forms are served: the legacy documents (APIVersions, APIGroupList, APIGroup,
APIResourceList), which kubernetes_asyncio and older clients read, and the aggregated discovery
(`apidiscovery.k8s.io/v2` APIGroupDiscoveryList), which kubectl asks for first with an Accept
header and which saves it one request per group version. A client that gets the legacy form in
answer to an aggregated request falls back to it, as it would with an old server.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import Any

from .resources import READ_VERBS, ResourceType

__all__ = [
    "AGGREGATED_CONTENT_TYPE",
    "SERVER_VERSION",
    "aggregated_discovery",
    "api_group",
    "api_group_list",
    "api_resource_list",
    "api_versions",
    "version_info",
    "wants_aggregated",
]

SERVER_VERSION = (1, 33, 0)
AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def version_info() -> dict[str, str]:
    major, minor, patch = SERVER_VERSION
    return {
        "major": str(major),
        "minor": str(minor),
        "emulationMajor": str(major),
        "emulationMinor": str(minor),
        "gitVersion": f"v{major}.{minor}.{patch}",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def wants_aggregated(accept: str) -> bool:
    """Whether an Accept header asks for aggregated discovery v2 (kubectl lists it first)."""
    return any(
        "as=APIGroupDiscoveryList" in part and "v=v2" in part and "v=v2beta1" not in part
        for part in accept.split(",")
    )


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_versions(resources: Sequence[ResourceType], group: str) -> list[str]:
    return sorted({r.version for r in resources if r.group == group}, reverse=True)


def api_group(resources: Sequence[ResourceType], group: str) -> dict[str, Any]:
    versions = [
        {"groupVersion": f"{group}/{v}", "version": v} for v in _group_versions(resources, group)
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_group_list(resources: Sequence[ResourceType]) -> dict[str, Any]:
    groups = sorted({r.group for r in resources if r.group})
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {k: v for k, v in api_group(resources, g).items() if k not in ("kind", "apiVersion")}
            for g in groups
        ],
    }


def api_resource_list(
    resources: Sequence[ResourceType], group: str, version: str
) -> dict[str, Any] | None:
    chosen = [r for r in resources if (r.group, r.version) == (group, version)]
    if not chosen:
        return None
    entries: list[dict[str, Any]] = []
    for r in chosen:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(READ_VERBS),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entries.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": chosen[0].api_version,
        "resources": entries,
    }


def _discovery_resource(r: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(READ_VERBS),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    return entry


def aggregated_discovery(resources: Sequence[ResourceType], *, legacy: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList of /api (`legacy`: the core group) or of /apis (the others)."""
    chosen = sorted(
        (r for r in resources if (r.group == "") == legacy),
        key=lambda r: (r.group, r.version),
    )
    items: list[dict[str, Any]] = []
    for group, in_group in groupby(chosen, key=lambda r: r.group):
        by_version: dict[str, list[ResourceType]] = {}
        for r in in_group:
            by_version.setdefault(r.version, []).append(r)
        versions = [
            {
                "version": version,
                "resources": [_discovery_resource(r) for r in by_version[version]],
                "freshness": "Current",
            }
            for version in sorted(by_version, reverse=True)
        ]
        items.append({"metadata": {"name": group} if group else {}, "versions": versions})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }

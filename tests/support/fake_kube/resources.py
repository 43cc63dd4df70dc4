"""The resource types the fake Kubernetes API serves: group, version, plural, kind, scope."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ENDPOINTS",
    "ENDPOINT_SLICES",
    "NAMESPACES",
    "PODS",
    "RESOURCES",
    "SERVICES",
    "ResourceType",
    "resource_for_kind",
    "resource_for_path",
]

# The verbs the fake answers: no writes over HTTP (tests write through the Python control API),
# so discovery advertises only these, which is what a read-only RBAC role would see too.
READ_VERBS: tuple[str, ...] = ("get", "list", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: `/api/v1/services` or `/apis/discovery.k8s.io/v1/endpointslices`."""

    group: str  # "" for the core (legacy) group served under /api
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """What objects carry in `apiVersion`: `v1` for the core group, else `group/version`."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def prefix(self) -> str:
        """The URL prefix of the group version: `/api/v1` or `/apis/<group>/<version>`."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str | None = None) -> str:
        if namespace is not None and self.namespaced:
            return f"{self.prefix}/namespaces/{namespace}/{self.plural}"
        return f"{self.prefix}/{self.plural}"


NAMESPACES = ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",))
SERVICES = ResourceType("", "v1", "services", "service", "Service", True, ("svc",), ("all",))
PODS = ResourceType("", "v1", "pods", "pod", "Pod", True, ("po",), ("all",))
ENDPOINTS = ResourceType("", "v1", "endpoints", "endpoints", "Endpoints", True, ("ep",))
ENDPOINT_SLICES = ResourceType(
    "discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", True
)
RESOURCES: tuple[ResourceType, ...] = (NAMESPACES, SERVICES, PODS, ENDPOINTS, ENDPOINT_SLICES)


def resource_for_kind(
    kind: str, api_version: str, resources: Sequence[ResourceType] = RESOURCES
) -> ResourceType:
    """The resource of an object's `kind` and `apiVersion`; KeyError if the fake lacks it."""
    for resource in resources:
        if resource.kind == kind and resource.api_version == api_version:
            return resource
    raise KeyError(f"no resource for kind {kind!r} in {api_version!r}")


def resource_for_path(
    group: str, version: str, plural: str, resources: Sequence[ResourceType] = RESOURCES
) -> ResourceType | None:
    for resource in resources:
        if (resource.group, resource.version, resource.plural) == (group, version, plural):
            return resource
    return None

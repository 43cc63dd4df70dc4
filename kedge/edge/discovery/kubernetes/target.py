"""Parsing `k8s` resolver targets: `<service>.<namespace>[.<any suffix>]:<port>` (kEdge).

The name is what kube-DNS would resolve (`api.payments`, `api.payments.svc.cluster.local`);
anything after the namespace is ignored. The port is a number (the endpoints' port, i.e.
the Service's targetPort, as in kEdge) or a port name (the Service port's name, which
EndpointSlices carry), resolved per slice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["K8sTarget", "parse_k8s_target"]

# RFC 1123 labels, as Kubernetes requires for Service and Namespace names.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# IANA service names, as Kubernetes requires for port names (RFC 6335 §5.1).
_PORT_NAME = re.compile(r"(?=.{1,15}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class K8sTarget:
    namespace: str
    service: str
    port: int | str  # a number, or a port name

    def __str__(self) -> str:
        return f"{self.service}.{self.namespace}:{self.port}"


def parse_k8s_target(text: str) -> K8sTarget:
    """ValueError with a one-line problem for anything that is not a target."""
    if "://" in text:
        raise ValueError("a k8s target has no scheme")
    name, sep, port_text = text.rpartition(":")
    if not sep or not port_text:
        raise ValueError("a k8s target needs a port: <service>.<namespace>:<port or port name>")
    labels = name.split(".")
    if len(labels) < 2:
        raise ValueError("a k8s target names a service and its namespace: <service>.<namespace>")
    service, namespace = labels[0], labels[1]
    for what, label in (("service", service), ("namespace", namespace)):
        if not _DNS_LABEL.fullmatch(label):
            raise ValueError(f"{what} {label!r} is not a valid Kubernetes name")
    port: int | str
    if port_text.isdigit():
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range")
    elif _PORT_NAME.fullmatch(port_text) and not port_text.isdigit():
        port = port_text
    else:
        raise ValueError(f"{port_text!r} is neither a port number nor a port name")
    return K8sTarget(namespace, service, port)

"""Parsing of the `kubernetes:` section and of `k8s` resolvers (see config_parser)."""

from __future__ import annotations

import os
import re

from kedge.core.config_loading import Node, dataclass_keys, existing_file, node_list
from kedge.edge.config import DiscoveryConfig, K8sResolverConfig, KubernetesConfig
from kedge.edge.discovery.kubernetes.target import parse_k8s_target

__all__ = ["parse_k8s_resolver", "parse_kubernetes"]


def parse_k8s_resolver(node: Node) -> K8sResolverConfig:
    try:
        target = parse_k8s_target(node.as_str())
    except ValueError as exc:
        raise node.error(
            str(exc), "write <service>.<namespace>:<port number or name>, e.g. api.payments:http"
        ) from None
    return K8sResolverConfig(target.namespace, target.service, target.port)


def parse_kubernetes(
    node: Node | None, d: KubernetesConfig, base_dir: str | None
) -> KubernetesConfig:
    if node is None:
        return d
    f = node.as_mapping(dataclass_keys(KubernetesConfig))
    kubeconfig = f.get("kubeconfig")
    context = f.get("context")
    if context is not None and kubeconfig is None:
        raise node.child("context").error(
            "a context needs a kubeconfig", "set `kubeconfig` too, or remove `context`"
        )
    backoff_initial = f.get_duration("backoff_initial", d.backoff_initial, allow_zero=False)
    backoff_max = f.get_duration("backoff_max", d.backoff_max, allow_zero=False)
    if backoff_max < backoff_initial:
        raise node.child("backoff_max").error(
            "backoff_max is below backoff_initial", "make backoff_max >= backoff_initial"
        )
    api_url = f.get("api_url")
    if api_url is not None and not api_url.as_str().startswith(("https://", "http://")):
        raise api_url.error("api_url is not an http(s) URL", "e.g. https://10.0.0.1:443")
    return KubernetesConfig(
        kubeconfig=existing_file(kubeconfig, base_dir) if kubeconfig is not None else None,
        context=context.as_str() if context is not None else None,
        api_url=api_url.as_str() if api_url is not None else None,
        # The service-account files exist only inside a pod: not checked here.
        token_file=os.path.expanduser(f.get_str("token_file", d.token_file)),
        ca_file=os.path.expanduser(f.get_str("ca_file", d.ca_file)),
        watch_timeout=f.get_duration("watch_timeout", d.watch_timeout, allow_zero=False),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        serve_terminating=f.get_bool("serve_terminating", d.serve_terminating),
        discovery=_discovery(n) if (n := f.get("discovery")) is not None else None,
    )


_DNS_NAME = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_LABEL_PREFIX = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _discovery(node: Node) -> DiscoveryConfig:
    f = node.as_mapping(dataclass_keys(DiscoveryConfig))
    suffix_node = f.require("domain_suffix", "e.g. `domain_suffix: cluster-a.internal`")
    suffix = suffix_node.as_str().lower().strip(".")
    if not _DNS_NAME.fullmatch(suffix):
        raise suffix_node.error(f"{suffix!r} is not a DNS name", "e.g. cluster-a.internal")
    d = DiscoveryConfig(suffix)
    prefix = f.get_str("label_prefix", d.label_prefix, allow_empty=True)
    if not _LABEL_PREFIX.fullmatch(prefix):
        raise node.child("label_prefix").error(
            f"{prefix!r} is not a label prefix", "a DNS subdomain and '/', e.g. kedge.io/"
        )
    namespaces = []
    for n in node_list(f.get("namespaces")):
        ns = n.as_str()
        if not _NAMESPACE.fullmatch(ns):
            raise n.error(f"{ns!r} is not a namespace name", "lower-case letters, digits, '-'")
        namespaces.append(ns)
    return DiscoveryConfig(
        domain_suffix=suffix,
        label_prefix=prefix,
        namespaces=tuple(namespaces),
        settle=f.get_duration("settle", d.settle),
    )

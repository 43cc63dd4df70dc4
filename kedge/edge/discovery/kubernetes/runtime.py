"""KubeRuntime: the edge's shared Kubernetes watches, made on first use.

Every `k8s` backend (and route discovery) of one `kubernetes:` config shares one
`KubeWatches`; a reload that changes the section makes a new one, and the old one is kept
for `take_retired` so the app closes it after the swap, once nothing new uses it.
"""

from __future__ import annotations

from dataclasses import replace

from kedge.edge.config import KubernetesConfig
from kedge.edge.discovery.kubernetes.api import KubeApi
from kedge.edge.discovery.kubernetes.credentials import credentials_for
from kedge.edge.discovery.kubernetes.watches import KubeWatches, WatchSettings

__all__ = ["KubeRuntime", "without_discovery"]


def without_discovery(config: KubernetesConfig) -> KubernetesConfig:
    """What the API connection and the `k8s` resolvers depend on: all but `discovery`.

    Changing route discovery's settings must not reconnect and relist every watch (nor,
    during an API outage, leave every `k8s` backend empty).
    """
    return replace(config, discovery=None)


class KubeRuntime:
    def __init__(self) -> None:
        self._current: tuple[KubernetesConfig, KubeWatches] | None = None
        self._retired: list[KubeWatches] = []

    @property
    def watches(self) -> KubeWatches | None:
        return self._current[1] if self._current is not None else None

    def watches_for(self, config: KubernetesConfig) -> KubeWatches:
        """OSError when the API cannot be reached at all (no kubeconfig, not in a pod)."""
        config = without_discovery(config)
        if self._current is None or self._current[0] != config:
            settings = WatchSettings(
                config.watch_timeout, config.backoff_initial, config.backoff_max
            )
            previous = self._current[1] if self._current is not None else None
            watches = KubeWatches(KubeApi(credentials_for(config)), settings, seed_from=previous)
            if self._current is not None:
                self._retired.append(self._current[1])
            self._current = (config, watches)
        return self._current[1]

    def take_retired(self) -> list[KubeWatches]:
        retired, self._retired = self._retired, []
        return retired

    async def aclose(self) -> None:
        for watches in self.take_retired():
            await watches.aclose()
        if self._current is not None:
            await self._current[1].aclose()
            self._current = None

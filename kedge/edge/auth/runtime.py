"""AuthRuntime: the auth layer's long-lived parts, carried across reloads.

The client-certificate cache and the token verifier (its cache of verified tokens and the
issuers' key sets) outlive any one config: a reload that leaves the `auth:` section alone
keeps the verifier whole, and one that changes it keeps the key set of every issuer whose
settings did not change, so no reload makes the edge fetch keys it already has.
"""

from __future__ import annotations

from kedge.edge.auth.client_cert import CertIdentities
from kedge.edge.auth.gate import AuthGate, DecisionHook, needs_gate
from kedge.edge.auth.jwks import HttpJsonFetcher, JwksSource
from kedge.edge.auth.verifier import TokenVerifier
from kedge.edge.config import AuthConfig, EdgeConfig

__all__ = ["AuthRuntime"]


class AuthRuntime:
    def __init__(self, on_decision: DecisionHook) -> None:
        self.certs = CertIdentities()
        self.verifier: TokenVerifier | None = None
        self._auth: AuthConfig | None = None
        self._on_decision = on_decision
        self._retired: list[JwksSource] = []

    def gate_for(self, config: EdgeConfig) -> AuthGate | None:
        """The gate for `config` (None when nothing in it needs one); key sources the new
        verifier no longer uses are kept for `take_retired`."""
        if not needs_gate(config):
            self._replace(None)
            return None
        auth = config.auth
        if auth is None or not auth.issuers:
            self._replace(None)
        elif auth != self._auth or self.verifier is None:
            kept = self.verifier.sources if self.verifier is not None else {}
            sources = [
                kept[i.issuer]
                if i.issuer in kept and kept[i.issuer].issuer == i
                else JwksSource(i, HttpJsonFetcher(i.fetch_timeout, i.ca_file))
                for i in auth.issuers
            ]
            self._replace(TokenVerifier(sources, cache_size=auth.token_cache_size))
        self._auth = auth
        return AuthGate(config, self.verifier, self.certs, self._on_decision)

    def _replace(self, new: TokenVerifier | None) -> None:
        old = self.verifier
        self.verifier = new
        if old is None or old is new:
            return
        kept = {id(s) for s in new.sources.values()} if new is not None else set()
        self._retired += [s for s in old.sources.values() if id(s) not in kept]

    def prefetch(self) -> None:
        """Fetch the key sets that have none yet, in the background."""
        if self.verifier is not None:
            for source in self.verifier.sources.values():
                source.prefetch()

    def take_retired(self) -> list[JwksSource]:
        retired, self._retired = self._retired, []
        return retired

    async def aclose(self) -> None:
        for source in self.take_retired():
            await source.aclose()
        if self.verifier is not None:
            await self.verifier.aclose()

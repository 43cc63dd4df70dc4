"""TokenVerifier: a bearer token to a TokenIdentity, with a bounded cache of verified tokens.

A hit costs one dict lookup plus an expiry and key check, so the hot path verifies no
signature; a miss parses, finds the issuer by `iss`, checks the algorithm against the
issuer's pinned list, verifies the signature with a key from the issuer's JWKS, then checks
the claims. A cached token stays valid until its `exp` (plus leeway) and only while the key
that verified it is still in the issuer's key set and that set is not past `jwks_max_stale`
(`JwksSource.is_current`, which also starts the TTL refresh), so a key removed by rotation
stops its tokens after the next refresh even when every request is a cache hit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from kedge.edge.auth.jwks import JwksSource
from kedge.edge.auth.jwt_token import (
    TokenRejected,
    audience_matches,
    check_claims,
    claim_strings,
    parse_token,
    peek_issuer,
)
from kedge.edge.auth.principal import TokenIdentity

__all__ = ["TokenVerifier"]


class TokenVerifier:
    def __init__(
        self,
        sources: Iterable[JwksSource],
        *,
        cache_size: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = {s.issuer.issuer: s for s in sources}
        self._cache: dict[str, tuple[TokenIdentity, JwksSource]] = {}
        self._cache_size = cache_size
        self._clock = clock
        self.signature_checks = 0  # for the bench and tests: misses that reached a key

    def addressed_to_edge(self, token: str) -> bool:
        """Whether an unverified token names one of our issuers and its audiences: such a
        token in `Authorization` is the edge's credential, anything else the backend's."""
        if token in self._cache:
            return True
        peeked = peek_issuer(token)
        if peeked is None:
            return False
        source = self.sources.get(peeked[0])
        return source is not None and audience_matches(peeked[1], source.issuer.audiences)

    async def verify(self, token: str) -> TokenIdentity:
        """The identity in `token`; TokenRejected or KeysUnavailable otherwise."""
        now = self._clock()
        hit = self._cache.get(token)
        if hit is not None:
            identity, cached_by = hit
            if now <= identity.expires + cached_by.issuer.leeway and cached_by.is_current(
                identity.key_id
            ):
                return identity
            del self._cache[token]
        parsed = parse_token(token)
        iss = parsed.claims.get("iss")
        source = self.sources.get(iss) if isinstance(iss, str) else None
        if source is None:
            raise TokenRejected("the token's issuer is not trusted here")
        cfg = source.issuer
        if parsed.alg not in cfg.algorithms:
            raise TokenRejected(f"algorithm {parsed.alg[:16]!r} is not accepted for this issuer")
        keys = await source.keys_for(parsed.kid, parsed.alg)
        if not keys:
            raise TokenRejected("the token's signing key is unknown (kid)")
        self.signature_checks += 1
        verified_by = next(
            (k for k in keys if k.verify(parsed.alg, parsed.signing_input, parsed.signature)),
            None,
        )
        if verified_by is None:
            raise TokenRejected("the signature does not verify")
        claims = parsed.claims
        exp = check_claims(claims, cfg, self._clock())
        identity = TokenIdentity(
            issuer_name=cfg.name,
            subject=str(claims["sub"]),
            groups=claim_strings(claims, cfg.groups_claim),
            permissions=claim_strings(claims, cfg.permissions_claim),
            expires=exp,
            # The kid of the key that verified it, not the token's: a token without `kid`
            # must also stop when its key leaves the set.
            key_id=verified_by.kid,
        )
        if self._cache_size:
            cache = self._cache
            if len(cache) >= self._cache_size:
                del cache[next(iter(cache))]  # the oldest entry (dicts keep insertion order)
            cache[token] = (identity, source)
        return identity

    async def aclose(self) -> None:
        for source in self.sources.values():
            await source.aclose()

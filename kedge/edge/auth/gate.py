"""AuthGate: the auth layer on the request path, between routing and forwarding.

For each exchange, once its route is known: the SNI check (421), the client certificate's
identity and the listener's EKU policy, the edge's bearer token (verified through the
cache), the route's policy (401 or 403, or gRPC UNAUTHENTICATED / PERMISSION_DENIED),
then the request headers the backend will see: client copies of identity headers and the
edge's own credential removed, the edge's identity header added when configured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from urllib.parse import quote

from kedge.core.errors import (
    AuthUnavailable,
    KedgeError,
    MisdirectedRequest,
    PermissionDenied,
    ProxyAuthRequired,
    Unauthenticated,
)
from kedge.core.http.exchange import Exchange
from kedge.edge.auth.client_cert import CertIdentities
from kedge.edge.auth.credentials import (
    carries_edge_token,
    challenge,
    find_credential,
    strip_headers,
)
from kedge.edge.auth.jwks import KeysUnavailable
from kedge.edge.auth.jwt_token import TokenRejected
from kedge.edge.auth.policy import Verdict, decide
from kedge.edge.auth.principal import CertIdentity, Principal, TokenIdentity
from kedge.edge.auth.verifier import TokenVerifier
from kedge.edge.config import (
    AuthConfig,
    ClientCertMode,
    CredentialSource,
    EdgeConfig,
    ListenerConfig,
    NoEkuPolicy,
    RouteAuth,
)

__all__ = ["AuthGate", "needs_gate"]

_ANONYMOUS = RouteAuth(anonymous=True)
_NO_AUTH = AuthConfig(default_route=_ANONYMOUS, adhoc=_ANONYMOUS)
# Client copies of these are removed by the header rewrite for every request anyway
# (kedge.core.http.headers); the configured extras and the identity header are added here.
_ALWAYS_STRIPPED = frozenset({b"x-kedge-principal", b"x-forwarded-client-cert"})

_ERROR_VERDICTS = {
    PermissionDenied.kind: Verdict.DENIED,
    MisdirectedRequest.kind: Verdict.MISDIRECTED,
    AuthUnavailable.kind: Verdict.UNAVAILABLE,
}

# (exchange, verdict, reason): the app logs refusals and counts every decision.
DecisionHook = Callable[[Exchange, Verdict, str], None]


def needs_gate(config: EdgeConfig) -> bool:
    """Whether any request can meet auth work: an `auth:` section, client certificates or
    an SNI rule on a listener."""
    return config.auth is not None or any(
        lst.tls is not None
        and (lst.tls.require_sni_match or lst.tls.client_certs.mode is not ClientCertMode.OFF)
        for lst in config.listeners
    )


class AuthGate:
    def __init__(
        self,
        config: EdgeConfig,
        verifier: TokenVerifier | None,
        certs: CertIdentities,
        on_decision: DecisionHook,
    ) -> None:
        self._auth = config.auth or _NO_AUTH
        self._listeners: Mapping[str, ListenerConfig] = {lst.name: lst for lst in config.listeners}
        self.verifier = verifier  # also read by /status
        self._certs = certs
        self._on_decision = on_decision
        auth = self._auth
        identity = auth.identity_header.encode() if auth.identity_header else None
        self._identity_name = identity
        self._strip = (
            frozenset(h.encode() for h in auth.strip_headers)
            | ({identity} if identity else frozenset())
        ) - _ALWAYS_STRIPPED

    async def admit(self, ex: Exchange, policy: RouteAuth | None, *, adhoc: bool = False) -> None:
        """Raise the typed error that answers `ex`, or return with its headers rewritten."""
        if policy is None:
            policy = self._auth.adhoc if adhoc else self._auth.default_route
        listener = self._listeners.get(ex.listener)
        sources = listener.credentials if listener else (CredentialSource.PROXY_AUTHORIZATION,)
        # A CONNECT addresses the edge as a proxy: its credential is Proxy-Authorization
        # only, and a missing one is answered 407 (RFC 9110 §9.3.6, §11.7.2, §15.5.8).
        tunnel = ex.head.method == "CONNECT"
        if tunnel:
            sources = (CredentialSource.PROXY_AUTHORIZATION,)
        try:
            principal, drop = await self._authenticate(ex, listener, policy, sources)
            decision = decide(policy, principal)
        except KedgeError as error:
            self._on_decision(
                ex, _ERROR_VERDICTS.get(error.kind, Verdict.UNAUTHENTICATED), error.reason
            )
            if tunnel and type(error) is Unauthenticated:
                raise ProxyAuthRequired(error.reason, *error.response_headers[:1]) from None
            raise
        verdict = decision.verdict
        ex.principal = principal.name
        self._on_decision(ex, verdict, decision.reason)
        if verdict is Verdict.UNAUTHENTICATED:
            refusal = ProxyAuthRequired if tunnel else Unauthenticated
            raise refusal(decision.reason, challenge(sources[0]))
        if verdict is Verdict.DENIED:
            raise PermissionDenied(decision.reason)
        head = ex.head
        if self._identity_name is not None and principal.authenticated:
            ex.edge_headers = [(self._identity_name, _header_value(principal.name))]
        if self._strip or drop:
            head.headers = strip_headers(head.headers, self._strip, drop)

    async def _authenticate(
        self,
        ex: Exchange,
        listener: ListenerConfig | None,
        policy: RouteAuth,
        sources: tuple[CredentialSource, ...],
    ) -> tuple[Principal, bool]:
        """The caller, and whether `Authorization` carries the edge's token (to strip)."""
        tls = listener.tls if listener is not None else None
        # A CONNECT's host is the tunnel's far end, not a name this connection serves.
        if tls is not None and tls.require_sni_match and ex.head.method != "CONNECT":
            sni = ex.tls.sni if ex.tls is not None else None
            if sni != ex.head.host:
                raise MisdirectedRequest(
                    f"this connection was opened for {sni or 'no server name'!s}, "
                    f"not for {ex.head.host}"
                )
        cert: CertIdentity | None = None
        if ex.tls is not None and ex.tls.cert_der is not None:
            cert = self._certs.get(ex.tls.cert_der)
            if (
                not cert.has_eku
                and tls is not None
                and tls.client_certs.no_eku is NoEkuPolicy.REJECT
            ):
                raise PermissionDenied(
                    "the client certificate has no extendedKeyUsage; "
                    "this listener accepts only certificates issued for clientAuth"
                )
        verifier = self.verifier
        if verifier is None:
            return Principal(cert, None), False
        headers = ex.head.headers
        # Any token of the edge's in `Authorization` is the edge's credential and never
        # reaches the backend, even when Proxy-Authorization is the one that counted.
        drop = CredentialSource.AUTHORIZATION in sources and carries_edge_token(
            headers, verifier.addressed_to_edge
        )
        if policy.anonymous:
            # An anonymous route reads no token: a malformed or oversized one is not its
            # business.
            return Principal(cert, None), drop
        credential = find_credential(
            headers, sources, verifier.addressed_to_edge, self._auth.max_token_bytes
        )
        token: TokenIdentity | None = None
        if credential is not None:
            try:
                token = await verifier.verify(credential.token)
            except TokenRejected as exc:
                raise Unauthenticated(
                    f"invalid bearer token: {exc}", challenge(credential.source, str(exc))
                ) from None
            except KeysUnavailable as exc:
                raise AuthUnavailable(str(exc)) from None
        return Principal(cert, token), drop


@lru_cache(maxsize=4096)
def _header_value(name: str) -> bytes:
    # Only visible ASCII goes into a header (RFC 9110 §5.5); anything else, including a
    # CR or LF smuggled into a claim, is percent-encoded (hardening H5).
    return quote(name, safe="/:@!$&'()*+,;=-._~").encode("ascii")

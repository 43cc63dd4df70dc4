"""Route policy: a pure decision over a route's RouteAuth and the caller's Principal.

Authentication failures (no credential, or one that proves nothing the route asks for)
are `unauthenticated` (401); an authenticated caller the policy does not admit is
`denied` (403). Permissions and principals compare exactly: no case folding, no trimming,
no regular expressions on claims (hardening J12).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kedge.edge.auth.principal import Principal
from kedge.edge.config import PermissionMode, PrincipalKind, PrincipalPattern, RouteAuth

__all__ = ["Decision", "Verdict", "decide", "pattern_matches"]


class Verdict(Enum):
    ANONYMOUS = "anonymous"  # the route needs no credential
    ALLOW = "allow"
    UNAUTHENTICATED = "unauthenticated"
    DENIED = "denied"
    # Refusals before any policy ran: the SNI rule (421), or no key set to check the
    # token with (503).
    MISDIRECTED = "misdirected"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str = ""


_ALLOW = Decision(Verdict.ALLOW)
_ANONYMOUS = Decision(Verdict.ANONYMOUS)


def decide(policy: RouteAuth, principal: Principal) -> Decision:
    if policy.anonymous:
        return _ANONYMOUS
    if not principal.authenticated:
        return Decision(Verdict.UNAUTHENTICATED, "no credential: this route needs one")
    if policy.permissions:
        token = principal.token
        if token is None:
            return Decision(
                Verdict.UNAUTHENTICATED,
                "this route needs a bearer token carrying permissions; a client "
                "certificate alone carries none",
            )
        wanted = policy.permissions
        held = token.permissions
        ok = (
            any(p in held for p in wanted)
            if policy.permission_mode is PermissionMode.ANY_OF
            else all(p in held for p in wanted)
        )
        if not ok:
            joiner = " or " if policy.permission_mode is PermissionMode.ANY_OF else " and "
            return Decision(
                Verdict.DENIED,
                f"{token.name} lacks permission {joiner.join(wanted)}",
            )
    if policy.principals and not any(pattern_matches(p, principal) for p in policy.principals):
        return Decision(Verdict.DENIED, f"{principal.name} is not allowed on this route")
    return _ALLOW


def _value_matches(pattern: PrincipalPattern, value: str) -> bool:
    return value.startswith(pattern.value) if pattern.prefix else value == pattern.value


def pattern_matches(pattern: PrincipalPattern, principal: Principal) -> bool:
    kind = pattern.kind
    cert, token = principal.cert, principal.token
    values: tuple[str, ...] | frozenset[str]
    if kind is PrincipalKind.URI:
        values = cert.uris if cert else ()
    elif kind is PrincipalKind.DNS:
        values = cert.dns_names if cert else ()
    elif kind is PrincipalKind.CN:
        values = (cert.common_name,) if cert and cert.common_name is not None else ()
    elif kind is PrincipalKind.SUBJECT:
        values = (cert.subject,) if cert else ()
    elif token is None or (pattern.issuer is not None and token.issuer_name != pattern.issuer):
        # A token pattern scoped to an issuer (`sub@corp:alice`) ignores other issuers'
        # tokens: two providers may each have an `alice`.
        values = ()
    elif kind is PrincipalKind.SUB:
        values = (token.subject,)
    else:
        values = token.groups
    return any(_value_matches(pattern, v) for v in values)

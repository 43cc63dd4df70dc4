"""Principal: who is calling, from a verified client certificate and/or a verified token."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CertIdentity", "Principal", "TokenIdentity"]


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """The names in a verified client certificate (RFC 5280 §4.1.2.6, §4.2.1.6)."""

    subject: str  # RFC 4514 string, e.g. "CN=client-a,O=apps"
    common_name: str | None
    dns_names: tuple[str, ...]  # lower-case
    uris: tuple[str, ...]  # e.g. SPIFFE IDs, "spiffe://trust-domain/ns/x/sa/y"
    issuer: str  # RFC 4514 string of the issuing CA
    serial: int
    has_eku: bool  # False: no extendedKeyUsage extension at all
    client_auth: bool  # the EKU names id-kp-clientAuth (or anyExtendedKeyUsage)

    @property
    def name(self) -> str:
        """The one name shown in logs and the identity header: a SPIFFE ID or other URI
        SAN first, then a DNS SAN, then the subject CN, then the whole subject."""
        for uri in self.uris:
            return uri
        for dns in self.dns_names:
            return dns
        return self.common_name or self.subject


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    """The claims of a verified OIDC JWT that policy looks at."""

    issuer_name: str  # the config name of the issuer
    subject: str
    groups: frozenset[str]
    permissions: frozenset[str]
    expires: float  # `exp`, seconds since the epoch
    key_id: str  # the JWKS key that verified it ("" for a key without `kid`)

    @property
    def name(self) -> str:
        return f"{self.issuer_name}/{self.subject}"


@dataclass(frozen=True, slots=True)
class Principal:
    cert: CertIdentity | None = None
    token: TokenIdentity | None = None

    @property
    def authenticated(self) -> bool:
        return self.cert is not None or self.token is not None

    @property
    def name(self) -> str:
        """ "" for nobody; the token's name wins: it is the more specific caller (a user or
        service behind the proxy whose certificate the connection shows)."""
        if self.token is not None:
            return self.token.name
        if self.cert is not None:
            return self.cert.name
        return ""

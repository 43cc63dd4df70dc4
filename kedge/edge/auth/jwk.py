"""JSON Web Keys (RFC 7517) to verification keys, and JWS signature checks (RFC 7518).

Only public, asymmetric keys are kept: RSA of 2048 bits or more, EC on P-256/384/521 and
OKP Ed25519/Ed448. A key set is validated as a whole (hardening J15): symmetric (`oct`)
and private keys, unknown key types and too-small RSA keys are skipped with a note, and
duplicate `kid`s refuse the whole set, since a `kid` must name one key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["KeySet", "KeySetError", "VerificationKey", "b64url_decode", "parse_key_set"]

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_MIN_RSA_BITS = 2048
_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# RFC 7518 §3.4: each ES algorithm is bound to one curve; the signature is R || S, each
# the curve's coordinate size.
_EC_CURVES: Mapping[str, tuple[type[ec.EllipticCurve], str, int]] = {
    "P-256": (ec.SECP256R1, "ES256", 32),
    "P-384": (ec.SECP384R1, "ES384", 48),
    "P-521": (ec.SECP521R1, "ES512", 66),
}
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class KeySetError(ValueError):
    """A key set that cannot be used at all."""


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): anything else raises ValueError."""
    raw = text.encode("ascii")
    if not raw or len(raw) % 4 == 1 or not _B64URL.issuperset(raw):
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error:
        raise ValueError("not unpadded base64url") from None


def _uint(jwk: Mapping[str, object], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"missing {name!r}")
    return int.from_bytes(b64url_decode(value), "big")


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str  # "" when the JWK has none
    algorithms: frozenset[str]  # what this key may verify
    key: PublicKey

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        if alg not in self.algorithms:
            return False
        key = self.key
        try:
            if isinstance(key, rsa.RSAPublicKey):
                digest = _HASHES[alg[2:]]()
                pad: padding.AsymmetricPadding = (
                    padding.PKCS1v15()
                    if alg.startswith("RS")
                    # RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash.
                    else padding.PSS(padding.MGF1(digest), digest.digest_size)
                )
                key.verify(signature, signing_input, pad, digest)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                size = _EC_CURVES[_curve_name(key)][2]
                if len(signature) != 2 * size:
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(_HASHES[alg[2:]]()))
            else:
                key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True


def _curve_name(key: ec.EllipticCurvePublicKey) -> str:
    for name, (curve, _alg, _size) in _EC_CURVES.items():
        if isinstance(key.curve, curve):
            return name
    raise ValueError("unsupported curve")


def _algorithms_for(jwk: Mapping[str, object], natural: frozenset[str]) -> frozenset[str]:
    alg = jwk.get("alg")
    if alg is None:
        return natural
    if not isinstance(alg, str) or alg not in natural:
        raise ValueError(f"alg {alg!r} does not fit the key type")
    return frozenset({alg})


def _parse_key(jwk: Mapping[str, object]) -> VerificationKey:
    kid = jwk.get("kid", "")
    if not isinstance(kid, str):
        raise ValueError("kid is not a string")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"use {use!r} is not sig")
    if "d" in jwk:
        raise ValueError("a private key was published")
    kty = jwk.get("kty")
    key: PublicKey
    if kty == "RSA":
        key = rsa.RSAPublicNumbers(_uint(jwk, "e"), _uint(jwk, "n")).public_key()
        if key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits (at least {_MIN_RSA_BITS})")
        natural = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    elif kty == "EC":
        crv = jwk.get("crv")
        if not isinstance(crv, str) or crv not in _EC_CURVES:
            raise ValueError(f"curve {crv!r} is not supported")
        curve, alg, _size = _EC_CURVES[crv]
        key = ec.EllipticCurvePublicNumbers(_uint(jwk, "x"), _uint(jwk, "y"), curve()).public_key()
        natural = frozenset({alg})
    elif kty == "OKP":
        crv, x = jwk.get("crv"), jwk.get("x")
        if not isinstance(x, str):
            raise ValueError("missing 'x'")
        if crv == "Ed25519":
            key = ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(x))
        elif crv == "Ed448":
            key = ed448.Ed448PublicKey.from_public_bytes(b64url_decode(x))
        else:
            raise ValueError(f"curve {crv!r} is not supported")
        natural = frozenset({"EdDSA"})
    elif kty == "oct":
        raise ValueError("symmetric keys are never used to verify tokens")
    else:
        raise ValueError(f"key type {kty!r} is not supported")
    return VerificationKey(kid, _algorithms_for(jwk, natural), key)


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[VerificationKey, ...]
    by_kid: Mapping[str, VerificationKey]  # the keys that have a `kid`
    skipped: tuple[str, ...]  # why each unusable key was left out, for the log

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        """The keys that may verify a token with this header: the one named by `kid`, or,
        for a token without `kid`, every key that allows `alg`."""
        if kid is not None:
            key = self.by_kid.get(kid)
            return [key] if key is not None and alg in key.algorithms else []
        return [k for k in self.keys if alg in k.algorithms]


def parse_key_set(document: object) -> KeySet:
    """A JWKS document (RFC 7517 §5) to a KeySet; KeySetError if none of it is usable."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetError('not a JWK set: expected {"keys": [...]}')
    keys: list[VerificationKey] = []
    by_kid: dict[str, VerificationKey] = {}
    skipped: list[str] = []
    for i, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            skipped.append(f"keys[{i}]: not an object")
            continue
        try:
            key = _parse_key(jwk)
        except (ValueError, TypeError) as exc:
            skipped.append(f"keys[{i}]: {exc}")
            continue
        if key.kid:
            if key.kid in by_kid:
                raise KeySetError(f"two keys share kid {key.kid!r}")
            by_kid[key.kid] = key
        keys.append(key)
    if not keys:
        raise KeySetError("no usable key: " + ("; ".join(skipped) if skipped else "none listed"))
    return KeySet(tuple(keys), by_kid, tuple(skipped))

"""Tests for kedge.edge.auth.verifier (TokenVerifier and its cache) and jwks (JwksSource).

No network: a fake JsonFetcher serves documents by URL (optionally held behind a gate, to
observe a fetch in flight), and one fake clock drives both the token times and the key-set
ages. Tokens are signed with keys from tests/support/oidc_provider.py (PyJWT), or assembled
by hand for the hostile shapes PyJWT refuses to make.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from kedge.edge.auth.jwk import KeySet
from kedge.edge.auth.jwks import JwksSource, KeysUnavailable
from kedge.edge.auth.jwt_token import TokenRejected
from kedge.edge.auth.verifier import TokenVerifier
from kedge.edge.config import IssuerConfig
from tests.support.oidc_provider import SigningKey, ec_key, rsa_key

NOW = 1_700_000_000.0
ISS = "https://idp.test"
JWKS_URL = "https://idp.test/jwks"
DISCOVERY_URL = "https://idp.test/.well-known/openid-configuration"
TTL = 300.0
MAX_STALE = 600.0
COOLDOWN = 30.0


# --- fakes ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeFetcher:
    """A JsonFetcher over a dict of URL -> document (or exception to raise). While `gate` is
    set and not open, every fetch waits for it: a test can see a fetch in flight."""

    def __init__(self, docs: dict[str, object] | None = None) -> None:
        self.docs: dict[str, object] = dict(docs or {})
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.closed = False

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        return self.gate

    async def get_json(self, url: str) -> object:
        self.calls.append(url)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.docs.get(url, OSError(f"GET {url} answered 404"))
        if isinstance(answer, BaseException):
            raise answer
        return copy.deepcopy(answer)

    async def aclose(self) -> None:
        self.closed = True


async def _settle(predicate: Callable[[], bool], rounds: int = 200) -> None:
    """Let background tasks run until `predicate` holds (bounded; no sleeping on time)."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


# --- keys and tokens ----------------------------------------------------------------------


@functools.cache
def _rsa(kid: str) -> SigningKey:
    return rsa_key(kid)


@functools.cache
def _ec(kid: str) -> SigningKey:
    return ec_key(kid)


def _jwks(*keys: SigningKey, without_kid: bool = False) -> dict[str, Any]:
    out = []
    for k in keys:
        jwk = k.public_jwk
        if without_kid:
            jwk = {n: v for n, v in jwk.items() if n != "kid"}
        out.append(jwk)
    return {"keys": out}


def _claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": "kedge",
        "sub": "svc-a",
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 600,
        "permissions": "svc.read svc.write",
        "groups": ["ops"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


_NO_KID = object()


def _mint(
    key: SigningKey, claims: dict[str, Any] | None = None, kid: object = None, **header: Any
) -> str:
    """A token signed by `key`; its header names `key.kid` unless `kid` says otherwise
    (`_NO_KID`: no kid at all)."""
    headers = dict(header)
    if kid is not _NO_KID:
        headers["kid"] = key.kid if kid is None else kid
    signer = jwt.PyJWK(dict(key.private_jwk), algorithm=key.alg)
    return jwt.encode(claims or _claims(), signer, algorithm=key.alg, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _seg(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _hs256_with_public_pem(key: SigningKey) -> str:
    """The algorithm-confusion forgery (RFC 8725 §2.1): HMAC keyed with the RSA public key."""
    public = jwt.PyJWK(key.public_jwk, algorithm=key.alg).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{_seg({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{_seg(_claims())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _tamper_payload(token: str, **changes: Any) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{_seg(_claims(**changes))}.{sig}"


def _tamper_signature(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    return f"{head}.{body}.{_b64(bytes(raw))}"


# --- the rig ------------------------------------------------------------------------------


def _issuer(**changes: Any) -> IssuerConfig:
    base = IssuerConfig(
        "corp",
        ISS,
        ("kedge",),
        jwks_url=JWKS_URL,
        algorithms=("RS256", "ES256"),
        jwks_ttl=TTL,
        jwks_max_stale=MAX_STALE,
        unknown_kid_cooldown=COOLDOWN,
    )
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass
class Rig:
    clock: FakeClock
    fetcher: FakeFetcher
    source: JwksSource
    verifier: TokenVerifier


def _rig(jwks: object = None, *, issuer: IssuerConfig | None = None, cache_size: int = 100) -> Rig:
    clock = FakeClock()
    fetcher = FakeFetcher({JWKS_URL: jwks if jwks is not None else _jwks(_rsa("rsa-1"))})
    source = JwksSource(issuer or _issuer(), fetcher, clock=clock)
    return Rig(clock, fetcher, source, TokenVerifier([source], cache_size=cache_size, clock=clock))


# --- TokenVerifier: identity and the cache ------------------------------------------------


async def test_verify_returns_the_identity() -> None:
    rig = _rig()
    identity = await rig.verifier.verify(_mint(_rsa("rsa-1")))
    assert identity.issuer_name == "corp"
    assert identity.subject == "svc-a"
    assert identity.name == "corp/svc-a"
    assert identity.permissions == frozenset({"svc.read", "svc.write"})
    assert identity.groups == frozenset({"ops"})
    assert identity.expires == int(NOW) + 600
    assert identity.key_id == "rsa-1"
    assert rig.verifier.signature_checks == 1
    assert rig.fetcher.calls == [JWKS_URL]


async def test_verify_uses_the_issuers_claim_paths() -> None:
    rig = _rig(issuer=_issuer(permissions_claim="kedge.perms", groups_claim="roles"))
    token = _mint(_rsa("rsa-1"), _claims(kedge={"perms": ["a.b"]}, roles="r1 r2"))
    identity = await rig.verifier.verify(token)
    assert (identity.permissions, identity.groups) == (frozenset({"a.b"}), frozenset({"r1", "r2"}))


async def test_a_cache_hit_checks_no_signature_and_fetches_nothing() -> None:
    rig = _rig()
    token = _mint(_rsa("rsa-1"))
    first = await rig.verifier.verify(token)
    for _ in range(50):
        assert await rig.verifier.verify(token) is first
    assert rig.verifier.signature_checks == 1
    assert rig.fetcher.calls == [JWKS_URL]
    assert rig.source.fetches == 1


CACHE_UNTIL_EXP: list[tuple[str, float, bool]] = [
    # (id, seconds after exp, still a hit); the issuer's leeway is 60 s
    ("well before exp", -500.0, True),
    ("at exp", 0.0, True),
    ("within leeway", 59.0, True),
    ("at exp + leeway", 60.0, True),
    ("past exp + leeway", 60.5, False),
    ("long past", 3600.0, False),
]


@pytest.mark.parametrize(
    ("after_exp", "hit"), [c[1:] for c in CACHE_UNTIL_EXP], ids=[c[0] for c in CACHE_UNTIL_EXP]
)
async def test_cached_until_exp(after_exp: float, hit: bool) -> None:
    # A long key-set TTL, so the clock jump does not touch the key set.
    rig = _rig(issuer=_issuer(jwks_ttl=1e6))
    exp = int(NOW) + 100
    token = _mint(_rsa("rsa-1"), _claims(exp=exp))
    await rig.verifier.verify(token)
    rig.clock.now = exp + after_exp
    if hit:
        await rig.verifier.verify(token)
        assert rig.verifier.signature_checks == 1
    else:
        with pytest.raises(TokenRejected, match="expired"):
            await rig.verifier.verify(token)
        assert rig.verifier.signature_checks == 2  # checked again, then refused on exp


CACHE_SIZES: list[tuple[str, int, list[int], list[int]]] = [
    # (id, cache_size, tokens verified in order, signature_checks after each)
    ("no cache", 0, [0, 0, 0, 1, 1], [1, 2, 3, 4, 5]),
    ("one entry", 1, [0, 0, 1, 1, 0], [1, 1, 2, 2, 3]),
    ("two entries: the newest two stay", 2, [0, 1, 2, 2, 1, 0], [1, 2, 3, 3, 3, 4]),
    ("room for all", 5, [0, 1, 2, 0, 1, 2], [1, 2, 3, 3, 3, 3]),
]


@pytest.mark.parametrize(
    ("size", "order", "checks"), [c[1:] for c in CACHE_SIZES], ids=[c[0] for c in CACHE_SIZES]
)
async def test_cache_is_bounded(size: int, order: list[int], checks: list[int]) -> None:
    rig = _rig(cache_size=size)
    tokens = [_mint(_rsa("rsa-1"), _claims(sub=f"svc-{i}")) for i in range(3)]
    seen = []
    for i in order:
        identity = await rig.verifier.verify(tokens[i])
        assert identity.subject == f"svc-{i}"
        seen.append(rig.verifier.signature_checks)
    assert seen == checks


async def test_a_refused_token_is_not_cached() -> None:
    rig = _rig()
    token = _tamper_signature(_mint(_rsa("rsa-1")))
    for checks in (1, 2, 3):
        with pytest.raises(TokenRejected, match="signature"):
            await rig.verifier.verify(token)
        assert rig.verifier.signature_checks == checks


ROTATIONS: list[tuple[str, object, str, str | None]] = [
    # (id, kid in the header of a token signed by rsa-1, the next key set, why it is then
    # refused, or None: the cached token is still accepted)
    ("kid dropped from the set", None, "rsa-2", "signing key is unknown"),
    ("kid kept in the set", None, "rsa-1+rsa-2", None),
    ("token without kid, its key dropped", _NO_KID, "rsa-2", "signature does not verify"),
    ("token without kid, its key kept", _NO_KID, "rsa-1+rsa-2", None),
]


@pytest.mark.parametrize(
    ("kid", "next_set", "refused"),
    [c[1:] for c in ROTATIONS],
    ids=[c[0] for c in ROTATIONS],
)
async def test_a_cached_token_stops_when_its_key_leaves_the_set(
    kid: object, next_set: str, refused: str | None
) -> None:
    rig = _rig()
    token = _mint(_rsa("rsa-1"), kid=kid)
    await rig.verifier.verify(token)
    assert await rig.verifier.verify(token)  # cached
    assert rig.verifier.signature_checks == 1
    # The provider rotates; after the TTL a request starts the background refresh.
    rig.fetcher.docs[JWKS_URL] = _jwks(*(_rsa(k) for k in next_set.split("+")))
    rig.clock.advance(TTL + 1)
    await rig.verifier.verify(_mint(_rsa("rsa-2")))
    await _settle(lambda: rig.source.has_kid("rsa-2"))
    checks = rig.verifier.signature_checks
    if refused is None:
        assert (await rig.verifier.verify(token)).subject == "svc-a"
        assert rig.verifier.signature_checks == checks  # still a cache hit
    else:
        with pytest.raises(TokenRejected, match=refused):
            await rig.verifier.verify(token)


async def test_a_hot_cache_still_notices_a_rotation() -> None:
    # Only cached tokens arrive: the key set must still be refreshed after its TTL, so a key
    # removed by the provider stops its tokens ("refreshed in the background after jwks_ttl").
    rig = _rig()
    token = _mint(_rsa("rsa-1"))
    await rig.verifier.verify(token)
    rig.fetcher.docs[JWKS_URL] = _jwks(_rsa("rsa-2"))
    rig.clock.advance(TTL + 1)
    await rig.verifier.verify(token)  # the old set still serves while the refresh runs
    await _settle(lambda: rig.source.fetches == 2 and rig.source.has_kid("rsa-2"))
    with pytest.raises(TokenRejected, match="signing key is unknown"):
        await rig.verifier.verify(token)


async def test_a_cached_token_stops_when_the_keys_are_too_stale() -> None:
    # The provider is down past jwks_ttl + jwks_max_stale: the issuer's tokens get 503
    # (KeysUnavailable), cached ones included.
    rig = _rig(issuer=_issuer(jwks_ttl=60.0, jwks_max_stale=60.0, max_lifetime=0.0))
    token = _mint(_rsa("rsa-1"), _claims(exp=int(NOW) + 10_000))
    await rig.verifier.verify(token)
    rig.fetcher.docs[JWKS_URL] = OSError("connection refused")
    rig.clock.advance(120.0)  # exactly ttl + max_stale: still usable
    assert (await rig.verifier.verify(token)).subject == "svc-a"
    rig.clock.advance(1.0)
    with pytest.raises(KeysUnavailable):
        await rig.verifier.verify(token)


# --- TokenVerifier: refusals --------------------------------------------------------------


def _bad_tokens() -> list[tuple[str, Callable[[], str], str, int]]:
    rsa1 = _rsa("rsa-1")
    attacker = _rsa("attacker")
    return [
        # (id, token maker, reason substring, signature checks it costs)
        (
            "untrusted issuer",
            lambda: _mint(rsa1, _claims(iss="https://evil.test")),
            "not trusted",
            0,
        ),
        (
            "issuer with trailing slash",
            lambda: _mint(rsa1, _claims(iss=ISS + "/")),
            "not trusted",
            0,
        ),
        ("no iss", lambda: _mint(rsa1, _claims(iss=None)), "not trusted", 0),
        (
            "alg none",
            lambda: f"{_seg({'alg': 'none', 'kid': 'rsa-1'})}.{_seg(_claims())}.AA",
            "algorithm 'none'",
            0,
        ),
        (
            "HS256 keyed with the public key",
            lambda: _hs256_with_public_pem(rsa1),
            "algorithm 'HS256'",
            0,
        ),
        (
            "PS256 not in the issuer's list",
            lambda: _mint_alg(rsa1, "PS256"),
            "algorithm 'PS256'",
            0,
        ),
        ("unknown kid", lambda: _mint(attacker), "signing key is unknown", 0),
        (
            "RS256 header naming an EC key",
            lambda: _mint(rsa1, kid="ec-1"),
            "signing key is unknown",
            0,
        ),
        (
            "tampered payload",
            lambda: _tamper_payload(_mint(rsa1), sub="admin"),
            "signature does not verify",
            1,
        ),
        (
            "tampered signature",
            lambda: _tamper_signature(_mint(rsa1)),
            "signature does not verify",
            1,
        ),
        (
            "signed by another key under our kid",
            lambda: _mint(attacker, kid="rsa-1"),
            "signature does not verify",
            1,
        ),
        (
            "no kid, signed by another key",
            lambda: _mint(attacker, kid=_NO_KID),
            "signature does not verify",
            1,
        ),
        (
            "embedded jwk of the signer is ignored",
            lambda: _mint(attacker, kid=_NO_KID, jwk=attacker.public_jwk),
            "signature does not verify",
            1,
        ),
        (
            "jku pointing at the attacker's keys is ignored",
            lambda: _mint(attacker, kid="rsa-1", jku="https://evil.test/jwks"),
            "signature does not verify",
            1,
        ),
        ("expired", lambda: _mint(rsa1, _claims(exp=int(NOW) - 61)), "expired", 1),
        ("wrong audience", lambda: _mint(rsa1, _claims(aud="api")), "aud", 1),
        (
            "exp as a string",
            lambda: _mint(rsa1, _claims(exp=str(int(NOW) + 600))),
            "exp is not a number",
            1,
        ),
        ("no sub", lambda: _mint(rsa1, _claims(sub=None)), "no sub", 1),
        (
            "permissions an object",
            lambda: _mint(rsa1, _claims(permissions={"a": 1})),
            "permissions",
            1,
        ),
        ("garbage", lambda: "not-a-jwt", "three dot-separated parts", 0),
    ]


def _mint_alg(key: SigningKey, alg: str) -> str:
    signer = jwt.PyJWK(dict(key.private_jwk), algorithm=key.alg)
    return jwt.encode(_claims(), signer.key, algorithm=alg, headers={"kid": key.kid})


BAD = _bad_tokens()


@pytest.mark.parametrize(("make", "why", "checks"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_verify_refuses(make: Callable[[], str], why: str, checks: int) -> None:
    keys = _jwks(_rsa("rsa-1"), _ec("ec-1"))
    rig = _rig(keys, issuer=_issuer(algorithms=("RS256",)))
    with pytest.raises(TokenRejected) as info:
        await rig.verifier.verify(make())
    assert why in str(info.value)
    assert rig.verifier.signature_checks == checks
    assert all(url == JWKS_URL for url in rig.fetcher.calls)  # jku/x5u never fetched


async def test_keys_unavailable_when_the_first_fetch_fails() -> None:
    rig = _rig(OSError("connection refused"))
    with pytest.raises(KeysUnavailable, match="connection refused"):
        await rig.verifier.verify(_mint(_rsa("rsa-1")))
    assert rig.verifier.signature_checks == 0


async def test_tokens_are_routed_to_their_issuers_keys() -> None:
    clock = FakeClock()
    a = JwksSource(_issuer(), FakeFetcher({JWKS_URL: _jwks(_rsa("rsa-1"))}), clock=clock)
    b_url = "https://other.test/jwks"
    b_cfg = _issuer(name="other", issuer="https://other.test", jwks_url=b_url)
    b = JwksSource(b_cfg, FakeFetcher({b_url: _jwks(_rsa("rsa-2"))}), clock=clock)
    verifier = TokenVerifier([a, b], clock=clock)
    ok_b = await verifier.verify(_mint(_rsa("rsa-2"), _claims(iss="https://other.test")))
    assert ok_b.name == "other/svc-a"
    # iss of A, signed by B's key: A's key set does not hold that kid.
    with pytest.raises(TokenRejected, match="signing key is unknown"):
        await verifier.verify(_mint(_rsa("rsa-2")))


ADDRESSED: list[tuple[str, Callable[[], str], bool]] = [
    ("our issuer and audience", lambda: _mint(_rsa("rsa-1")), True),
    ("aud list with ours", lambda: _mint(_rsa("rsa-1"), _claims(aud=["x", "kedge"])), True),
    (
        "not verified at all: a bad signature still counts",
        lambda: _tamper_signature(_mint(_rsa("rsa-1"))),
        True,
    ),
    ("our issuer, another audience", lambda: _mint(_rsa("rsa-1"), _claims(aud="backend")), False),
    ("another issuer", lambda: _mint(_rsa("rsa-1"), _claims(iss="https://other.test")), False),
    ("opaque token", lambda: "backend-secret", False),
    ("three parts, not JSON", lambda: "a.b.c", False),
]


@pytest.mark.parametrize(
    ("make", "ours"), [c[1:] for c in ADDRESSED], ids=[c[0] for c in ADDRESSED]
)
def test_addressed_to_edge(make: Callable[[], str], ours: bool) -> None:
    assert _rig().verifier.addressed_to_edge(make()) is ours


async def test_verifier_aclose_closes_every_source() -> None:
    rig = _rig()
    await rig.verifier.aclose()
    assert rig.fetcher.closed


# --- JwksSource: single flight ----------------------------------------------------------------


@pytest.mark.parametrize("waiters", [2, 25])
async def test_concurrent_first_requests_share_one_fetch(waiters: int) -> None:
    rig = _rig(issuer=_issuer(jwks_url=None))
    rig.fetcher.docs[DISCOVERY_URL] = {"issuer": ISS, "jwks_uri": JWKS_URL}
    gate = rig.fetcher.hold()
    tasks = [asyncio.create_task(rig.source.keys_for("rsa-1", "RS256")) for _ in range(waiters)]
    await _settle(lambda: len(rig.fetcher.calls) == 1)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not any(t.done() for t in tasks)
    assert rig.fetcher.calls == [DISCOVERY_URL]
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert all([k.kid for k in keys] == ["rsa-1"] for keys in results)
    assert rig.fetcher.calls == [DISCOVERY_URL, JWKS_URL]
    assert rig.source.fetches == 1


async def test_a_cancelled_waiter_does_not_cancel_the_fetch() -> None:
    rig = _rig()
    gate = rig.fetcher.hold()
    first = asyncio.create_task(rig.source.keys_for("rsa-1", "RS256"))
    await _settle(lambda: len(rig.fetcher.calls) == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    await _settle(lambda: rig.source.keys is not None)
    assert [k.kid for k in await rig.source.keys_for("rsa-1", "RS256")] == ["rsa-1"]
    assert rig.source.fetches == 1


async def test_prefetch_fetches_once_in_the_background() -> None:
    rig = _rig()
    rig.source.prefetch()
    rig.source.prefetch()
    await _settle(lambda: rig.source.keys is not None)
    rig.source.prefetch()  # has keys: nothing to do
    for _ in range(5):
        await asyncio.sleep(0)
    assert rig.fetcher.calls == [JWKS_URL]


async def test_aclose_cancels_a_fetch_in_flight() -> None:
    rig = _rig()
    rig.fetcher.hold()
    rig.source.prefetch()
    await _settle(lambda: len(rig.fetcher.calls) == 1)
    await asyncio.wait_for(rig.source.aclose(), 5)
    assert rig.fetcher.closed
    assert rig.source.keys is None


# --- JwksSource: TTL, staleness -------------------------------------------------------------

TTL_TABLE: list[tuple[str, float, bool]] = [
    # (id, seconds after the fetch, a background refresh starts)
    ("fresh", 10.0, False),
    ("exactly ttl", TTL, False),
    ("just past ttl", TTL + 0.5, True),
    ("deep into max_stale", TTL + MAX_STALE - 1, True),
]


@pytest.mark.parametrize(
    ("age", "refresh"), [c[1:] for c in TTL_TABLE], ids=[c[0] for c in TTL_TABLE]
)
async def test_ttl_refresh_runs_in_the_background_while_old_keys_serve(
    age: float, refresh: bool
) -> None:
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    old = rig.source.keys
    rig.fetcher.docs[JWKS_URL] = _jwks(_rsa("rsa-1"), _rsa("rsa-2"))
    gate = rig.fetcher.hold()
    rig.clock.advance(age)
    keys = await asyncio.wait_for(rig.source.keys_for("rsa-1", "RS256"), 1)  # never waits
    assert [k.kid for k in keys] == ["rsa-1"]
    assert rig.source.keys is old
    for _ in range(5):
        await asyncio.sleep(0)
    assert rig.source.fetches == (2 if refresh else 1)
    gate.set()
    if refresh:
        await _settle(lambda: rig.source.has_kid("rsa-2"))
        assert rig.source.keys is not old
    else:
        assert rig.source.keys is old


STALE_TABLE: list[tuple[str, float, bool]] = [
    # (id, seconds after the last good fetch while the provider fails, keys still served)
    ("within ttl", TTL - 1, True),
    ("stale, within max_stale", TTL + MAX_STALE / 2, True),
    ("exactly ttl + max_stale", TTL + MAX_STALE, True),
    ("past ttl + max_stale", TTL + MAX_STALE + 1, False),
]


@pytest.mark.parametrize(
    ("age", "served"), [c[1:] for c in STALE_TABLE], ids=[c[0] for c in STALE_TABLE]
)
async def test_stale_keys_serve_up_to_max_stale(age: float, served: bool) -> None:
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    rig.fetcher.docs[JWKS_URL] = OSError("provider down")
    rig.clock.advance(age)
    if served:
        assert [k.kid for k in await rig.source.keys_for("rsa-1", "RS256")] == ["rsa-1"]
    else:
        with pytest.raises(KeysUnavailable, match="provider down"):
            await rig.source.keys_for("rsa-1", "RS256")
        assert rig.source.keys is None
        assert rig.source.fetches == 2  # it tried once more before giving up


async def test_keys_come_back_after_an_outage() -> None:
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    rig.fetcher.docs[JWKS_URL] = OSError("provider down")
    rig.clock.advance(TTL + MAX_STALE + 1)
    with pytest.raises(KeysUnavailable):
        await rig.source.keys_for("rsa-1", "RS256")
    rig.fetcher.docs[JWKS_URL] = _jwks(_rsa("rsa-1"))
    rig.clock.advance(1.0)  # past the first backoff
    assert [k.kid for k in await rig.source.keys_for("rsa-1", "RS256")] == ["rsa-1"]
    assert rig.source.last_error == ""


# --- JwksSource: unknown kids ------------------------------------------------------------------


async def test_unknown_kid_refreshes_at_most_once_per_cooldown() -> None:
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    steps: list[tuple[float, str, int, list[str]]] = [
        # (clock advance, kid asked, fetches after, kids found)
        (COOLDOWN, "new", 2, []),  # a cooldown after any fetch: refresh, still unknown
        (1.0, "new", 2, []),  # cooling down
        (1.0, "other", 2, []),  # any unknown kid shares the cooldown
        (COOLDOWN - 3.0, "new", 2, []),  # 1 s before the cooldown ends
        (1.0, "new", 3, ["new"]),  # over; the provider published it meanwhile
        (0.0, "rsa-1", 3, ["rsa-1"]),  # known kids never refresh
        (1.0, "rsa-9", 3, []),  # cooling down again
    ]
    for i, (advance, kid, fetches, found) in enumerate(steps):
        if found == ["new"]:
            rig.fetcher.docs[JWKS_URL] = _jwks(_rsa("rsa-1"), _rsa("new"))
        rig.clock.advance(advance)
        keys = await rig.source.keys_for(kid, "RS256")
        assert ([k.kid for k in keys], rig.source.fetches) == (found, fetches), f"step {i}"


async def test_a_flood_of_unknown_kids_costs_one_fetch() -> None:
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    rig.clock.advance(COOLDOWN)
    results = await asyncio.gather(*(rig.source.keys_for(f"kid-{i}", "RS256") for i in range(100)))
    assert all(r == [] for r in results)
    assert rig.source.fetches == 2


async def test_no_kid_token_never_triggers_an_unknown_kid_refresh() -> None:
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    rig.clock.advance(COOLDOWN)
    assert await rig.source.keys_for(None, "ES256") == []
    assert rig.source.fetches == 1


# --- JwksSource: backoff -----------------------------------------------------------------------

# (seconds since the start, a fetch happens): backoff 1, 2, 4, then capped at the cooldown (4).
BACKOFF_STEPS: list[tuple[float, bool]] = [
    (0.0, True),
    (0.5, False),
    (0.99, False),
    (1.0, True),  # retry_at = 1 + 2
    (2.9, False),
    (3.0, True),  # retry_at = 3 + 4
    (6.9, False),
    (7.0, True),  # retry_at = 7 + 4 (capped)
    (10.9, False),
    (11.0, True),
]


async def test_failed_fetches_back_off() -> None:
    rig = _rig(OSError("refused"), issuer=_issuer(unknown_kid_cooldown=4.0))
    for at, fetched in BACKOFF_STEPS:
        before = rig.source.fetches
        rig.clock.now = NOW + at
        with pytest.raises(KeysUnavailable):
            await rig.source.keys_for("rsa-1", "RS256")
        assert rig.source.fetches - before == int(fetched), f"at {at}"


async def test_a_success_resets_the_backoff() -> None:
    rig = _rig(OSError("refused"), issuer=_issuer(unknown_kid_cooldown=60.0))
    for at in (0.0, 1.0, 3.0):  # backoff grows to 4
        rig.clock.now = NOW + at
        with pytest.raises(KeysUnavailable):
            await rig.source.keys_for("rsa-1", "RS256")
    rig.fetcher.docs[JWKS_URL] = _jwks(_rsa("rsa-1"))
    rig.clock.now = NOW + 7.0
    assert await rig.source.keys_for("rsa-1", "RS256")
    # Fails again past max_stale: the backoff starts over at 1 s.
    rig.fetcher.docs[JWKS_URL] = OSError("refused")
    rig.clock.now = NOW + 7.0 + TTL + MAX_STALE + 1
    with pytest.raises(KeysUnavailable):
        await rig.source.keys_for("rsa-1", "RS256")
    fetches = rig.source.fetches
    rig.clock.advance(1.0)
    with pytest.raises(KeysUnavailable):
        await rig.source.keys_for("rsa-1", "RS256")
    assert rig.source.fetches == fetches + 1


async def test_stale_phase_refreshes_back_off_too() -> None:
    # Past the TTL with the provider failing, requests must not start a fetch each: the
    # background refresh waits out the backoff like the request path does.
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    rig.fetcher.docs[JWKS_URL] = OSError("refused")
    rig.clock.advance(TTL + 1)
    await rig.source.keys_for("rsa-1", "RS256")
    await _settle(lambda: rig.source.last_error != "")
    assert rig.source.fetches == 2
    for _ in range(20):
        assert await rig.source.keys_for("rsa-1", "RS256")
        for _ in range(3):
            await asyncio.sleep(0)
    assert rig.source.fetches == 2
    rig.clock.advance(1.0)
    await rig.source.keys_for("rsa-1", "RS256")
    await _settle(lambda: rig.source.fetches == 3)


# --- JwksSource: discovery ----------------------------------------------------------------

DISCOVERY: list[tuple[str, dict[str, Any], object, str | None]] = [
    # (id, issuer overrides, the discovery document, error substring or None when keys load)
    ("good", {}, {"issuer": ISS, "jwks_uri": JWKS_URL}, None),
    (
        "explicit discovery_url",
        {"discovery_url": "https://meta.test/oidc"},
        {"issuer": ISS, "jwks_uri": JWKS_URL},
        None,
    ),
    ("http jwks_uri on loopback", {}, {"issuer": ISS, "jwks_uri": "http://127.0.0.1:9/jwks"}, None),
    ("issuer mismatch", {}, {"issuer": "https://evil.test", "jwks_uri": JWKS_URL}, "is not"),
    ("issuer with trailing slash", {}, {"issuer": ISS + "/", "jwks_uri": JWKS_URL}, "is not"),
    ("no issuer", {}, {"jwks_uri": JWKS_URL}, "is not"),
    ("non-https jwks_uri", {}, {"issuer": ISS, "jwks_uri": "http://idp.test/jwks"}, "not https"),
    (
        "http jwks_uri on a loopback-looking name",
        {},
        {"issuer": ISS, "jwks_uri": "http://localhost.evil.test/jwks"},
        "not https",
    ),
    ("ftp jwks_uri", {}, {"issuer": ISS, "jwks_uri": "ftp://idp.test/jwks"}, "not https"),
    ("no jwks_uri", {}, {"issuer": ISS}, "no jwks_uri"),
    ("jwks_uri not a string", {}, {"issuer": ISS, "jwks_uri": [JWKS_URL]}, "no jwks_uri"),
    ("not an object", {}, [{"issuer": ISS, "jwks_uri": JWKS_URL}], "not a JSON object"),
    ("discovery fails", {}, OSError("GET answered 500"), "answered 500"),
]


@pytest.mark.parametrize(
    ("overrides", "document", "error"), [c[1:] for c in DISCOVERY], ids=[c[0] for c in DISCOVERY]
)
async def test_discovery(overrides: dict[str, Any], document: object, error: str | None) -> None:
    cfg = _issuer(jwks_url=None, **overrides)
    discovery_url = cfg.discovery_url or DISCOVERY_URL
    jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
    docs: dict[str, object] = {discovery_url: document}
    if isinstance(jwks_uri, str):
        docs[jwks_uri] = _jwks(_rsa("rsa-1"))
    fetcher = FakeFetcher(docs)
    source = JwksSource(cfg, fetcher, clock=FakeClock())
    if error is None:
        assert [k.kid for k in await source.keys_for("rsa-1", "RS256")] == ["rsa-1"]
        assert fetcher.calls == [discovery_url, jwks_uri]
    else:
        with pytest.raises(KeysUnavailable, match=error):
            await source.keys_for("rsa-1", "RS256")
        assert error in source.last_error
        assert fetcher.calls == [discovery_url]  # a refused jwks_uri is never fetched


async def test_discovery_runs_again_after_a_failed_key_fetch() -> None:
    # The provider may have moved its keys: a failure forgets the discovered jwks_uri.
    rig = _rig(issuer=_issuer(jwks_url=None))
    rig.fetcher.docs[DISCOVERY_URL] = {"issuer": ISS, "jwks_uri": "https://idp.test/old-jwks"}
    with pytest.raises(KeysUnavailable):
        await rig.source.keys_for("rsa-1", "RS256")
    rig.fetcher.docs[DISCOVERY_URL] = {"issuer": ISS, "jwks_uri": JWKS_URL}
    rig.clock.advance(1.0)
    assert await rig.source.keys_for("rsa-1", "RS256")
    assert rig.fetcher.calls == [
        DISCOVERY_URL,
        "https://idp.test/old-jwks",
        DISCOVERY_URL,
        JWKS_URL,
    ]


async def test_a_pinned_jwks_url_skips_discovery() -> None:
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    assert rig.fetcher.calls == [JWKS_URL]


# --- JwksSource: bad key sets keep the old one ------------------------------------------------

BAD_SETS: list[tuple[str, object, str]] = [
    # (id, what the JWKS URL answers on refresh, last_error substring)
    ("empty set", {"keys": []}, "none listed"),
    ("not a JWK set", {"keys": "rsa-1"}, "not a JWK set"),
    ("a JSON list", [_jwks(_rsa("rsa-2"))], "not a JWK set"),
    (
        "only a symmetric key",
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "rsa-1"}]},
        "symmetric",
    ),
    ("only a private key", {"keys": [dict(_rsa("rsa-9").private_jwk)]}, "private key"),
    (
        "duplicate kid",
        {"keys": [_rsa("rsa-2").public_jwk, {**_rsa("rsa-3").public_jwk, "kid": "rsa-2"}]},
        "share kid",
    ),
    ("HTML instead of JSON", OSError("GET https://idp.test/jwks: not JSON"), "not JSON"),
    ("too large", OSError("document larger than 1048576 bytes"), "larger"),
    ("HTTP 500", OSError("GET https://idp.test/jwks answered 500"), "answered 500"),
    ("timeout", TimeoutError(), "TimeoutError"),
    ("aiohttp error", aiohttp.ClientConnectionError("reset by peer"), "reset by peer"),
]


@pytest.mark.parametrize(
    ("answer", "error"), [c[1:] for c in BAD_SETS], ids=[c[0] for c in BAD_SETS]
)
async def test_a_bad_key_set_keeps_the_old_one(answer: object, error: str) -> None:
    rig = _rig()
    await rig.source.keys_for("rsa-1", "RS256")
    old = rig.source.keys
    assert isinstance(old, KeySet)
    rig.fetcher.docs[JWKS_URL] = answer
    rig.clock.advance(TTL + 1)
    await rig.source.keys_for("rsa-1", "RS256")  # starts the refresh
    await _settle(lambda: rig.source.last_error != "")
    assert error in rig.source.last_error
    assert "\n" not in rig.source.last_error
    assert rig.source.keys is old
    assert [k.kid for k in await rig.source.keys_for("rsa-1", "RS256")] == ["rsa-1"]
    # and a token of the old key still verifies
    assert (await rig.verifier.verify(_mint(_rsa("rsa-1")))).subject == "svc-a"


async def test_a_partly_bad_key_set_is_used_without_its_bad_keys() -> None:
    rig = _rig({"keys": [_rsa("rsa-1").public_jwk, {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]})
    assert await rig.source.keys_for("rsa-1", "RS256")
    keys = rig.source.keys
    assert keys is not None and list(keys.by_kid) == ["rsa-1"]
    assert await rig.source.keys_for("hmac", "RS256") == []
